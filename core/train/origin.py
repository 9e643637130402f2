"""The provenance record (:class:`~core.artifacts.records.Origin`) of a model trained, or derived, with a training
config on a split: the one place a card's origin is filled in."""

from __future__ import annotations

from typing import Any

from core.artifacts.records import Origin, TrainingData
from core.data.prepare import PreparedSplit
from core.models import pretrained_provenance
from core.provenance import git_sha
from core.train.config import TrainConfig


def origin_of(cfg: TrainConfig, *, split: PreparedSplit, architecture: str | None = None, **more: Any) -> Origin:
    """This code's commit, ``cfg``'s seed, the split and data, and the ImageNet weights ``architecture`` (default:
    ``cfg.model``) started from; ``more``: the other :class:`Origin` fields (teacher, fold, parent folder...)."""
    architecture = architecture or cfg.model
    return Origin(git_sha=git_sha(), seed=cfg.seed, split_hash=split.hash, dataset_fingerprint=split.data.fingerprint,
                  training_data=TrainingData.of(cfg.data_dir, images=len(split.rows("train"))),
                  pretrained_weights=pretrained_provenance(architecture) if cfg.pretrained else None, **more)
