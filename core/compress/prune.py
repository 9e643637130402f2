"""Structured (channel) pruning with torch-pruning, and unstructured magnitude pruning as a contrast.

Structured pruning removes whole channels, so the pruned network is a smaller dense network: fewer
parameters, fewer MACs, a smaller file and faster inference on any runtime. Unstructured pruning only
zeroes individual weights: the sparsity is real, but stored densely the file is the same size and dense
kernels run no faster. Both are measured the same way so the tables show the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune

from core.errors import ConfigError, check_allowed

log = logging.getLogger(__name__)

IMPORTANCES = ("magnitude", "taylor")


@dataclass(frozen=True)
class PruneReport:
    """Size of the network before and after pruning."""

    ratio: float
    params_before: int
    params_after: int
    macs_before: float
    macs_after: float


def check_ratio(ratio: float) -> float:
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"pruning ratio must be in [0, 1), got {ratio}")
    return float(ratio)


def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[float, int]:
    """(MACs, parameters) of one forward pass on ``example_input``."""
    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, example_input)
    model.train(was_training)
    return float(macs), int(params)


def _importance(name: str) -> tp.importance.Importance:
    check_allowed(name, IMPORTANCES, what="pruning importance")
    return tp.importance.GroupTaylorImportance() if name == "taylor" else tp.importance.GroupMagnitudeImportance(p=2)


def structured_prune(
    model: nn.Module,
    *,
    ratio: float,
    example_input: torch.Tensor,
    importance: str = "magnitude",
    global_pruning: bool = False,
    iterative_steps: int = 1,
    round_to: int | None = 8,
    grad_batches: Callable[[], list[tuple[torch.Tensor, torch.Tensor]]] | None = None,
    after_step: Callable[[int], None] | None = None,
) -> PruneReport:
    """Remove ``ratio`` of the channels of every prunable layer, in place; the classifier head is kept.

    Args:
        ratio: channel pruning ratio in [0, 1); 0 leaves the model unchanged.
        example_input: a batch for tracing the dependency graph (a small spatial size is faster).
        importance: ``magnitude`` (group L2 norm) or ``taylor`` (needs ``grad_batches``).
        global_pruning: rank channels across layers instead of per layer.
        iterative_steps: reach ``ratio`` in this many equal steps (torch-pruning's linear schedule); the
            channels removed at each step are ranked on the weights as they are then.
        after_step: called with the step index (0-based) after every step, e.g. to fine-tune before the
            next step ranks channels; the model is handed back in evaluation mode on its device.
        round_to: keep channel counts multiples of this (hardware-friendly).
        grad_batches: returns (images, labels) batches whose loss gradients feed Taylor importance.
    """
    check_ratio(ratio)
    imp = _importance(importance)
    if importance == "taylor" and grad_batches is None:
        raise ConfigError("taylor importance needs calibration batches (grad_batches)")
    macs0, params0 = count_macs_params(model, example_input)
    if ratio == 0:
        return PruneReport(0.0, params0, params0, macs0, macs0)
    ignored = _kept_whole(model, residual_stream=False)
    model.eval()
    with torch.enable_grad():  # the dependency graph is traced through autograd
        pruner = tp.pruner.BasePruner(model, example_input, importance=imp, pruning_ratio=ratio,
                                      global_pruning=global_pruning, iterative_steps=iterative_steps,
                                      ignored_layers=ignored, round_to=round_to)
        for step in range(iterative_steps):
            if importance == "taylor":
                _taylor_gradients(model, grad_batches(), ignored=ignored)  # type: ignore[misc]
            pruner.step()
            if after_step is not None:
                log.info("pruning step %d/%d: %.2fM params", step + 1, iterative_steps,
                         sum(p.numel() for p in model.parameters()) / 1e6)
                model.zero_grad(set_to_none=True)
                after_step(step)
                model.eval()
    model.zero_grad(set_to_none=True)
    macs1, params1 = count_macs_params(model, example_input)
    log.info("structured pruning %.2f (%s%s): params %.2fM -> %.2fM, MACs %.3fG -> %.3fG", ratio, importance,
             ", global" if global_pruning else "", params0 / 1e6, params1 / 1e6, macs0 / 1e9, macs1 / 1e9)
    return PruneReport(ratio, params0, params1, macs0, macs1)


def residual_stream_layers(model: nn.Module) -> list[nn.Module]:
    """The convs whose output channels are the residual stream of a timm EfficientNet / MobileNet-style network:
    the stem, each block's output conv (``conv_pwl`` of inverted-residual and edge-residual blocks, ``conv_pw`` of
    depthwise-separable ones, ``conv`` of plain conv blocks) and the head conv. Pruning one of them cuts the stream
    through a whole stage at once; keeping them prunes only the channels inside blocks (the expansions). Empty
    for architectures without ``blocks`` (ResNets, DenseNets: their pruning groups are traced as they are)."""
    if not hasattr(model, "blocks"):
        return []
    layers = [m for m in (getattr(model, "conv_stem", None), getattr(model, "conv_head", None)) if m is not None]
    for stage in model.blocks:
        for block in stage:
            for attr in ("conv_pwl", "conv_pw", "conv"):
                if attr == "conv_pw" and hasattr(block, "conv_pwl"):
                    continue  # an inverted residual's conv_pw is its expansion: prunable
                if isinstance(getattr(block, attr, None), nn.Conv2d):
                    layers.append(getattr(block, attr))
                    break
    return layers


def prune_to_macs(
    model: nn.Module,
    *,
    keep: float,
    example_input: torch.Tensor,
    importance: str = "magnitude",
    max_layer_ratio: float = 0.7,
    keep_residual_stream: bool = True,
    round_to: int | None = 8,
    steps: int = 50,
    grad_batches: Callable[[], list[tuple[torch.Tensor, torch.Tensor]]] | None = None,
) -> PruneReport:
    """Prune channels, ranked globally, until at most ``keep`` of the dense MACs are left (in place).

    A budget in MACs says what a per-layer channel ratio hides (0.5 of every layer's channels leaves ~25% of the
    MACs). Channels go in ``steps`` small global steps (torch-pruning's schedule up to ``max_layer_ratio`` of any
    one layer) until the budget is met; the classifier and, with ``keep_residual_stream``, the stream's convs
    (:func:`residual_stream_layers`) are never pruned. The report's ``macs_after`` is what was reached: a budget
    the constraints cannot meet stops at the closest and says so.
    """
    if not 0 < keep <= 1:
        raise ConfigError(f"the MAC budget is a fraction of the dense MACs in (0, 1], got {keep}")
    if not 0 < max_layer_ratio < 1:
        raise ConfigError(f"max_layer_ratio must be in (0, 1), got {max_layer_ratio}")
    imp = _importance(importance)
    if importance == "taylor" and grad_batches is None:
        raise ConfigError("taylor importance needs calibration batches (grad_batches)")
    macs0, params0 = count_macs_params(model, example_input)
    target = keep * macs0
    ignored = _kept_whole(model, residual_stream=keep_residual_stream)
    model.eval()
    macs = macs0
    with torch.enable_grad():
        pruner = tp.pruner.BasePruner(model, example_input, importance=imp, pruning_ratio=max_layer_ratio,
                                      max_pruning_ratio=max_layer_ratio, global_pruning=True,
                                      iterative_steps=steps, ignored_layers=ignored, round_to=round_to)
        for _ in range(steps):
            if macs <= target:
                break
            if importance == "taylor":
                _taylor_gradients(model, grad_batches(), ignored=ignored)  # type: ignore[misc]
            pruner.step()
            macs, _ = count_macs_params(model, example_input)
    model.zero_grad(set_to_none=True)
    macs1, params1 = count_macs_params(model, example_input)
    if macs1 > target * 1.001:
        log.warning("MAC budget %.2f not reachable with max_layer_ratio %.2f%s: stopped at %.3f of the dense MACs",
                    keep, max_layer_ratio, " and the residual stream kept" if keep_residual_stream else "",
                    macs1 / macs0)
    log.info("pruned to a MAC budget of %.2f (%s, global): MACs %.3fG -> %.3fG (%.3f), params %.2fM -> %.2fM",
             keep, importance, macs0 / 1e9, macs1 / 1e9, macs1 / macs0, params0 / 1e6, params1 / 1e6)
    return PruneReport(keep, params0, params1, macs0, macs1)


def _kept_whole(model: nn.Module, *, residual_stream: bool) -> list[nn.Module]:
    """The layers pruning leaves alone: the classifier (its outputs are the classes) and, with ``residual_stream``,
    the stem, projection and head convs of :func:`residual_stream_layers`."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    kept = [classifier] if isinstance(classifier, nn.Module) else []
    return kept + (residual_stream_layers(model) if residual_stream else [])


def _taylor_gradients(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], *,
                      ignored: list[nn.Module]) -> None:
    """The loss gradients Taylor importance reads. None reaching the prunable layers would rank every channel 0 and
    prune nothing in silence: that is an error (a zero-initialised classifier passes no gradient back)."""
    model.zero_grad()
    for images, labels in batches:
        nn.functional.cross_entropy(model(images), labels).backward()
    skip = {id(p) for m in ignored for p in m.parameters()}
    if not any(p.grad is not None and bool(p.grad.any()) for p in model.parameters() if id(p) not in skip):
        raise ConfigError("taylor importance: no gradient reaches the layers to prune (a zero-initialised "
                          "classifier passes none back): fit the head first (linear_probe) or use magnitude")


def linear_probe(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int = 200,
                 lr: float = 0.01) -> float:
    """Fit the classifier alone on the frozen features of ``images`` (in place); returns the last training loss.

    A freshly attached head is zero (``core.models.zero_head``), so no gradient reaches the backbone and Taylor
    importance is zero everywhere: a probe gives it the gradient of a classifier that has seen the task."""
    model.eval()
    with torch.no_grad():
        features = torch.cat([model.forward_head(model.forward_features(images[i:i + 64]), pre_logits=True)
                              for i in range(0, len(images), 64)])
    head = model.get_classifier()
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    loss = torch.tensor(float("nan"))
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(head(features), labels)
            loss.backward()
            optimizer.step()
    model.zero_grad(set_to_none=True)
    return float(loss.detach())


def group_sparsity_regularizer(model: nn.Module, *, example_input: torch.Tensor, reg: float,
                               keep_residual_stream: bool = True) -> Callable[[], None]:
    """Sparse training before pruning (torch-pruning's group regularisation, DepGraph's ``group_sl``): the returned
    function, called after each backward pass, adds a group-lasso gradient that pushes whole prunable channel groups
    towards zero, so a later pruning removes channels that carry little. The classifier and, with
    ``keep_residual_stream``, the stream's convs are left alone, as :func:`prune_to_macs` leaves them."""
    if reg <= 0:
        raise ConfigError(f"the sparsity regularisation must be > 0, got {reg}")
    ignored = _kept_whole(model, residual_stream=keep_residual_stream)
    was_training = model.training
    with torch.enable_grad():
        pruner = tp.pruner.GroupNormPruner(model, example_input, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                           reg=reg, global_pruning=True, ignored_layers=ignored)
    model.train(was_training)
    return lambda: pruner.regularize(model)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every batch norm's running mean and variance from ``batches`` (images only; the weights do not
    change). Pruning a block's expanded channels changes what its projection conv feeds the next batch norm, so
    the ImageNet statistics no longer fit: layers kept frozen (eval mode) never update them, and an EMA of the
    weights averages them in for hundreds of steps. Returns the number of images seen."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum) for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch, not a moving one
        m.train()
    seen = 0
    for images in batches:
        model(images)
        seen += len(images)
    for m, (training, momentum) in zip(norms, saved, strict=True):
        m.train(training)
        m.momentum = momentum
    model.train(was_training)
    return seen


def _prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def unstructured_prune(model: nn.Module, *, amount: float) -> float:
    """Zero the ``amount`` smallest-magnitude conv/linear weights globally, in place; returns the sparsity."""
    check_ratio(amount)
    if amount > 0:
        params = _prunable_weights(model)
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)
        for module, name in params:
            torch_prune.remove(module, name)  # make the zeros permanent; the tensor stays dense
    return weight_sparsity(model)


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights in conv and linear layers."""
    total = zeros = 0
    for module, _ in _prunable_weights(model):
        total += module.weight.numel()
        zeros += int((module.weight == 0).sum())
    return zeros / max(1, total)
