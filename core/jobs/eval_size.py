"""A cross-validation's fold models scored at another input size (or crop) on their own held-out images.

Training with random-resized crops makes objects look larger than a centre crop at the same size does, so a model
often scores better when tested at a somewhat higher resolution than it trained at (the train-test resolution
discrepancy: Touvron et al., NeurIPS 2019). Scoring is inference only: a few CPU-minutes for every out-of-fold
image, no training. The result is pooled like :func:`core.jobs.screen.cv_held_out` (each image once, from the fold
model that did not train on it), with each fold card's own temperature.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.artifacts.card import load_trained_model
from core.calibration import calibrated_softmax
from core.config import build_config
from core.data.prepare import PreparedSplit
from core.data.split import apply_split, load_split
from core.errors import ConfigError
from core.fusion import LEVERS, METADATA_FIELDS, cross_fit, metadata_features
from core.jobs.screen import HeldOut, check_rows, paired_row, pooled
from core.train.config import TrainConfig
from core.train.evaluation import model_logits

log = logging.getLogger(__name__)


def fold_held_out_at(fold_dir: str | Path, *, input_size: int, crop_pct: float | None = None) -> HeldOut:
    """One fold model's held-out images (its split's ``val`` rows) scored at ``input_size`` (and ``crop_pct``;
    default: the card's), with the card's temperature."""
    fold_dir = Path(fold_dir)
    model, card, _ = load_trained_model(fold_dir)
    prep = dataclasses.replace(card.preprocessing, input_size=input_size,
                               crop_pct=card.preprocessing.crop_pct if crop_pct is None else crop_pct)
    recipe = build_config(TrainConfig, yaml_path=fold_dir / "config.yaml")
    data = recipe.prepare(prep)
    split = PreparedSplit(data, apply_split(data.table, load_split(fold_dir / "split.csv")), prep)
    rows = split.rows("val")
    logits, labels = model_logits(model, split.loader("val", batch_size=64), torch.device("cpu"),
                                  channels_last=recipe.channels_last)
    log.info("%s at %d px (crop %.3f): %d held-out images", card.run_id, input_size, prep.crop_pct, len(rows))
    return HeldOut(card.run_id, rows["image_id"].to_numpy(dtype=str), labels,
                   calibrated_softmax(logits, card.temperature), float("nan"))


def cv_held_out_at(cv_dir: str | Path, folds: int, *, input_size: int, crop_pct: float | None = None) -> HeldOut:
    """Every fold's held-out images at ``input_size``, pooled in image-id order."""
    parts = [fold_held_out_at(Path(cv_dir) / f"fold{i}", input_size=input_size, crop_pct=crop_pct)
             for i in range(folds)]
    return pooled(f"{Path(cv_dir).name}@{input_size}", parts)


def screen_sizes(base: HeldOut, others: list[HeldOut], rows: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Photo alone and with metadata fusion (cross-fitted over lesions) for ``base`` and each of ``others`` (the same
    images), every row paired against ``base`` photo alone; ``rows``: the images' metadata rows, in order."""
    for run in others:
        if not np.array_equal(run.image_ids, base.image_ids):
            raise ConfigError(f"{run.run_id} scored other images than {base.run_id}: not the same cross-validation")
    check_rows(rows, base)
    labels, groups = base.labels, rows["lesion_id"].to_numpy()
    ref = base.probs.argmax(1)
    meta = metadata_features(rows, METADATA_FIELDS)
    table = []
    for run in [base, *others]:
        fused = cross_fit(LEVERS["metadata_fusion"], run.probs, meta, labels, groups, seed=seed).argmax(1)
        for name, pred in (("photo alone", run.probs.argmax(1)), ("+ metadata fusion", fused)):
            on = "stored" if run is base else run.run_id
            table.append({"on": on, **paired_row(name, labels=labels, pred=pred, ref=ref, groups=groups,
                                                 minutes=float("nan"))})
    return pd.DataFrame(table)
