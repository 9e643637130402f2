"""The GPU data path: the decoded uint8 training images moved to the device once, augmented there in batches.

On a GPU the CPU-side loader (decode-free, but crop, flip, jitter and normalise per image in worker processes)
becomes the bottleneck for a small model; here each epoch only moves indices. The augmentation is the same
torchvision v2 pipeline as :func:`core.data.transforms.train_transform`, applied on the device to each image of a
batch (v2 transforms given a batch would draw one crop for all of it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from core.data.dataset import CachedImageDataset

log = logging.getLogger(__name__)


class DeviceImages:
    """A split's cached images as one uint8 (N, 3, H, W) tensor on ``device``, with their labels."""

    def __init__(self, dataset: CachedImageDataset, *, device: torch.device):
        rows = np.asarray(dataset.rows)
        # Copies: the cache is a read-only memory map and pandas hands out read-only label arrays.
        self.images = torch.from_numpy(np.array(dataset.array[rows], copy=True)).to(device).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(np.array(dataset.labels, dtype=np.int64, copy=True)).to(device)
        self.device = device
        log.info("training images on %s: %d x %s uint8 (%.0f MB)", device, len(self.labels),
                 tuple(self.images.shape[1:]), self.images.numel() / 1e6)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, sampler: Sampler[int], *, batch_size: int, transform: Callable[[torch.Tensor], torch.Tensor],
                drop_last: bool) -> DeviceBatches:
        return DeviceBatches(self, sampler, batch_size=batch_size, transform=transform, drop_last=drop_last)


class DeviceBatches:
    """One epoch of (augmented images, labels) batches drawn in ``sampler``'s order; a DataLoader stand-in."""

    def __init__(self, source: DeviceImages, sampler: Sampler[int], *, batch_size: int,
                 transform: Callable[[torch.Tensor], torch.Tensor], drop_last: bool):
        self.source, self.sampler, self.batch_size = source, sampler, batch_size
        self.transform, self.drop_last = transform, drop_last

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(list(self.sampler), device=self.source.device)
        for k in range(len(self)):
            index = order[k * self.batch_size:(k + 1) * self.batch_size]
            images = self.source.images[index]
            yield torch.stack([self.transform(image) for image in images]), self.source.labels[index]
