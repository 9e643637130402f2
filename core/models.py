"""The one registry of supported architectures, built through timm.

The five architectures of the study are registered by their timm names; a few small models are registered
for CPU-scale runs and tests. ImageNet weights come from timm's hub; when they cannot be downloaded the
error says so and names the ``--no-pretrained`` flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import timm
import torch

from core.classes import CLASSES
from core.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its timm name and what it is for."""

    timm_name: str
    role: str


ARCHITECTURES: dict[str, Architecture] = {
    "efficientnet_b0": Architecture("efficientnet_b0.ra_in1k", "study"),
    "efficientnet_b4": Architecture("efficientnet_b4.ra2_in1k", "study"),
    "resnet50": Architecture("resnet50.a1_in1k", "study"),
    "densenet169": Architecture("densenet169.tv_in1k", "study"),
    "mobilenetv3_large_100": Architecture("mobilenetv3_large_100.ra_in1k", "edge baseline"),
    "resnet18": Architecture("resnet18.a1_in1k", "CPU-scale"),
    "test_efficientnet": Architecture("test_efficientnet.r160_in1k", "tiny, for tests"),
    "test_resnet": Architecture("test_resnet.r160_in1k", "tiny, for tests"),
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
        ModelError: unknown name, or pretrained weights that cannot be downloaded.
    """
    arch = check_architecture(name)
    if not pretrained:
        return timm.create_model(arch.timm_name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate)
    try:
        model = timm.create_model(arch.timm_name, pretrained=True, num_classes=num_classes, drop_rate=drop_rate)
    except Exception as exc:  # hub/network errors come in many types (OSError, httpx, hf_hub); the name is valid here
        raise ModelError(
            f"could not load ImageNet-pretrained weights for {name} ({arch.timm_name}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            "Check the network or the Hugging Face cache, or train from scratch with --no-pretrained"
        ) from exc
    log.info("loaded ImageNet-pretrained weights for %s", arch.timm_name)
    return model

