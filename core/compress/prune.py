"""Structured (channel) pruning with torch-pruning, and unstructured magnitude pruning as a contrast.

Structured pruning removes whole channels, so the pruned network is a smaller dense network: fewer
parameters, fewer MACs, a smaller file and faster inference on any runtime. Unstructured pruning only
zeroes individual weights: the sparsity is real, but stored densely the file is the same size and dense
kernels run no faster. Both are measured the same way so the tables show the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune

from core.errors import ConfigError

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
    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise ConfigError(f"unknown pruning importance {name!r}; allowed: {', '.join(IMPORTANCES)}")


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
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    ignored = [classifier] if isinstance(classifier, nn.Module) else []
    model.eval()
    with torch.enable_grad():  # the dependency graph is traced through autograd
        pruner = tp.pruner.BasePruner(model, example_input, importance=imp, pruning_ratio=ratio,
                                      global_pruning=global_pruning, iterative_steps=iterative_steps,
                                      ignored_layers=ignored, round_to=round_to)
        for step in range(iterative_steps):
            if importance == "taylor":
                model.zero_grad()
                for images, labels in grad_batches():  # type: ignore[misc]
                    nn.functional.cross_entropy(model(images), labels).backward()
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
