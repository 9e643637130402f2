"""Training loaders: the epoch's image order (shared across ranks), balanced sampling, and the GPU data path."""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler

from core.data.dataset import CachedImageDataset, balanced_sampler
from core.data.device_images import DeviceBatches, DeviceImages
from core.data.prepare import PreparedSplit
from core.data.sharding import RankShard
from core.data.transforms import train_transform
from core.errors import ConfigError
from core.train.config import TrainConfig
from core.world import World


def check_global_batch(cfg: TrainConfig, world: World) -> None:
    if world.distributed and cfg.batch_size % world.size:
        raise ConfigError(f"batch_size {cfg.batch_size} is the global batch: it must divide by the {world.size} "
                          "processes")


def shared_order(dataset: CachedImageDataset, cfg: TrainConfig, epoch_seed: int, *, world: World
                 ) -> Sampler[int]:
    """The epoch's order drawn alike on every rank (balanced or shuffled), of which each rank keeps its share."""
    base = (balanced_sampler(dataset.labels, seed=epoch_seed) if cfg.imbalance == "balanced_sampler"
            else RandomSampler(dataset, generator=torch.Generator().manual_seed(epoch_seed)))
    return RankShard(base, rank=world.rank, world=world.size) if world.distributed else base


def train_loader(split: PreparedSplit, cfg: TrainConfig, epoch_seed: int, *, world: World = World(),
                 on_device: DeviceImages | None = None, size: int | None = None) -> DataLoader | DeviceBatches:
    """One epoch's training batches, augmented to ``size`` pixels (default: the model's input size)."""
    augment = dict(scale_min=cfg.aug_scale_min, color_jitter=cfg.aug_color_jitter, policy=cfg.aug_policy)
    prep = split.prep if size is None else dataclasses.replace(split.prep, input_size=size)
    if on_device is not None:  # the same order as the DataLoader paths below; augmentation on the device
        dataset = split.dataset("train", transform=None)
        return on_device.batches(shared_order(dataset, cfg, epoch_seed, world=world),
                                 batch_size=cfg.batch_size // world.size,
                                 transform=train_transform(prep, **augment, from_tensor=True),
                                 drop_last=len(dataset) > cfg.batch_size)
    dataset = split.dataset("train", train_transform(prep, **augment))
    generator = torch.Generator().manual_seed(epoch_seed)
    if world.distributed:  # every rank draws the epoch's order, keeps its interleaved share: same global batches
        return DataLoader(dataset, batch_size=cfg.batch_size // world.size, num_workers=cfg.workers,
                          sampler=shared_order(dataset, cfg, epoch_seed, world=world),
                          drop_last=len(dataset) > cfg.batch_size, generator=generator)
    if cfg.imbalance == "balanced_sampler":
        sampler = balanced_sampler(dataset.labels, seed=epoch_seed)
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                          drop_last=len(dataset) > cfg.batch_size, generator=generator,
                          persistent_workers=False)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.workers,
                      drop_last=len(dataset) > cfg.batch_size, generator=generator)
