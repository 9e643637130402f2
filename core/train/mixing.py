"""Mixup and cutmix on a training batch (Zhang et al. 2018; Yun et al. 2019), for any loss that takes hard labels.

A mixed batch is scored as ``lam * loss(logits, y) + (1 - lam) * loss(logits, y[perm])``: the class weights,
the logit adjustment and distillation of the recipe apply to each half as they are, with no soft-label variant of
each loss to write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mixed:
    images: torch.Tensor
    partner: torch.Tensor  # each image's partner's labels
    lam: float  # the share of each image's own label


@dataclass(frozen=True)
class BatchMix:
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> Mixed | None:
        """The batch mixed (None: left as it is this time). Draws from torch's global generator (seeded by the
        recipe), so a run is repeatable."""
        if not self.enabled or float(torch.rand(())) >= self.prob:
            return None
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or float(torch.rand(())) < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(len(images), device=images.device)
        if not use_cutmix:
            return Mixed(lam * images + (1 - lam) * images[perm], targets[perm], lam)
        top, left, bottom, right = _box(images.shape[-2], images.shape[-1], lam)
        mixed = images.clone()
        mixed[..., top:bottom, left:right] = images[perm][..., top:bottom, left:right]
        area = (bottom - top) * (right - left) / (images.shape[-2] * images.shape[-1])
        return Mixed(mixed, targets[perm], 1.0 - area)  # the share of the pixels that stayed


def _box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """A box of area about ``1 - lam`` of the image, centred anywhere, clipped to it."""
    cut = (1.0 - lam) ** 0.5
    h, w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    return max(cy - h // 2, 0), max(cx - w // 2, 0), min(cy + h // 2, height), min(cx + w // 2, width)


def mixed_loss(criterion: Callable[..., torch.Tensor], logits: torch.Tensor, targets: torch.Tensor, mixed: Mixed | None,
               *extra: torch.Tensor) -> torch.Tensor:
    """``criterion`` on the batch's own labels, and on the partners' weighted by the mix."""
    if mixed is None:
        return criterion(logits, targets, *extra)
    return mixed.lam * criterion(logits, targets, *extra) + (1 - mixed.lam) * criterion(logits, mixed.partner, *extra)
