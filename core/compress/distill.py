"""Knowledge distillation from the dense parent while a pruned model is fine-tuned (Hinton et al., 2015).

The student's loss is ``(1 - alpha) * base(student, labels) + alpha * T^2 * KL(p_teacher^T || p_student^T)``,
where ``p^T`` are temperature-softened softmax outputs; ``T^2`` keeps the soft term's gradients on the scale of
the hard term's as ``T`` changes. The teacher is frozen: evaluation mode (batch-norm statistics fixed) and no
gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from core.errors import ConfigError


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True) * temperature**2


class DistillationLoss(nn.Module):
    """The base (hard-label) loss blended with the soft-target loss against a teacher's logits."""

    def __init__(self, base: nn.Module, *, alpha: float, temperature: float):
        super().__init__()
        self.base, self.alpha, self.temperature = base, alpha, temperature

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        hard = self.base(logits, targets)
        return (1 - self.alpha) * hard + self.alpha * distillation_kl(logits, teacher_logits, self.temperature)


@dataclass
class Distillation:
    """A frozen teacher and the blend: ``alpha`` = weight of the soft term, ``temperature`` = softening."""

    teacher: nn.Module
    alpha: float = 0.5
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"distillation alpha must be in (0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError(f"distillation temperature must be > 0, got {self.temperature}")
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def loss(self, base: nn.Module) -> DistillationLoss:
        return DistillationLoss(base, alpha=self.alpha, temperature=self.temperature)

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(images).float()
