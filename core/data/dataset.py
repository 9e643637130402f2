"""PyTorch datasets and samplers over the decoded-image cache, and class-imbalance handling."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from core.classes import CLASSES
from core.data.cache import ImageCache

IMBALANCE_MODES = ("weighted_loss", "balanced_sampler", "logit_adjusted", "none")


class CachedImageDataset(Dataset):
    """(transformed image, label) pairs read from an :class:`ImageCache`; ``transform`` gets the HWC uint8 row."""

    def __init__(self, cache: ImageCache, table: pd.DataFrame,
                 transform: Callable[[np.ndarray], torch.Tensor | np.ndarray]):
        self.array = cache.array
        self.rows = cache.rows(table["image_id"].tolist())
        self.labels = table["label"].to_numpy(dtype=np.int64)
        self.image_ids = table["image_id"].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | np.ndarray, int]:
        return self.transform(self.array[self.rows[i]]), int(self.labels[i])


def class_counts(labels: np.ndarray, num_classes: int = len(CLASSES)) -> np.ndarray:
    return np.bincount(labels, minlength=num_classes)


def class_weights(labels: np.ndarray, num_classes: int = len(CLASSES)) -> torch.Tensor:
    """Inverse-frequency weights ``n / (k * count)`` (sklearn's "balanced"); absent classes get weight 0."""
    counts = class_counts(labels, num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def balanced_sampler(labels: np.ndarray, *, seed: int, num_classes: int = len(CLASSES)) -> WeightedRandomSampler:
    """Sample every class equally often in expectation (with replacement), one epoch = len(labels) draws."""
    counts = class_counts(labels, num_classes)
    per_sample = 1.0 / counts[labels]
    return WeightedRandomSampler(torch.as_tensor(per_sample, dtype=torch.double), num_samples=len(labels),
                                 replacement=True, generator=torch.Generator().manual_seed(seed))

