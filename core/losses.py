"""Training losses, including the two that handle class imbalance through the loss.

- ``weighted_loss``: cross-entropy with inverse-frequency class weights.
- ``logit_adjusted``: cross-entropy on ``logits + tau * log(prior)`` (Menon et al., "Long-tail learning via
  logit adjustment", ICLR 2021). Training sees the data as it is (no oversampled copies of the rare
  classes), and the raw logits of the trained model approximate the balanced-error-optimal classifier, so
  prediction needs no change: the deployed model is the trained one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.data.dataset import IMBALANCE_MODES, class_counts, class_weights
from core.errors import check_allowed


class LogitAdjustedLoss(nn.Module):
    """Cross-entropy on prior-shifted logits; ``tau`` = 0 is plain cross-entropy."""

    def __init__(self, prior: torch.Tensor, *, tau: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        # Absent classes get a tiny prior (not log 0): their logits are pushed up, never to infinity.
        self.register_buffer("shift", tau * torch.log(prior.clamp_min(1e-8)))
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.shift, targets, label_smoothing=self.label_smoothing)


def make_criterion(imbalance: str, train_labels: np.ndarray, *, label_smoothing: float = 0.0,
                   logit_adjust_tau: float = 1.0) -> nn.Module:
    """The training loss for an imbalance mode (the sampler modes use plain cross-entropy)."""
    check_allowed(imbalance, IMBALANCE_MODES, what="imbalance mode")
    if imbalance == "weighted_loss":
        return nn.CrossEntropyLoss(weight=class_weights(train_labels), label_smoothing=label_smoothing)
    if imbalance == "logit_adjusted":
        counts = torch.as_tensor(class_counts(train_labels), dtype=torch.float32)
        return LogitAdjustedLoss(counts / counts.sum(), tau=logit_adjust_tau, label_smoothing=label_smoothing)
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
