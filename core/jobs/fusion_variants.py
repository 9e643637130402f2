"""Variants of metadata late fusion screened out of fold: its regularisation, a non-linear age, interactions, and a
balanced-accuracy bias on top. Each is cross-fitted over lesions (:func:`core.fusion.cross_fit`) on a finished
cross-validation's pooled out-of-fold predictions and paired against the deployed form (C = 1, age linear)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.fusion import (
    METADATA_FIELDS,
    Lever,
    apply_logit_bias,
    cross_fit,
    fit_logit_bias,
    fit_stack,
    log_probabilities,
    metadata_features,
)
from core.jobs.screen import HeldOut, check_rows, paired_row

log = logging.getLogger(__name__)

AGE_BINS = (0, 30, 45, 60, 75, 200)  # years; the last bin is open


def _age_years(rows: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(rows["age"], errors="coerce").to_numpy(dtype=np.float64)  # NaN: missing


def _age_scaled(rows: pd.DataFrame) -> np.ndarray:
    return np.nan_to_num(_age_years(rows) / 100.0)[:, None]


def _age_bins(rows: pd.DataFrame, probs: np.ndarray) -> np.ndarray:
    age = _age_years(rows)  # a missing age falls in no bin: the base features flag it
    return np.stack([(age >= lo) & (age < hi) for lo, hi in zip(AGE_BINS[:-1], AGE_BINS[1:], strict=True)],
                    axis=1).astype(np.float64)


def _site_x_age(rows: pd.DataFrame, probs: np.ndarray) -> np.ndarray:
    return metadata_features(rows, ("localization",)) * _age_scaled(rows)


def _age_x_logp(rows: pd.DataFrame, probs: np.ndarray) -> np.ndarray:
    return log_probabilities(probs) * _age_scaled(rows)


EXTRAS: dict[str, Callable[[pd.DataFrame, np.ndarray], np.ndarray]] = {
    "age_bins": _age_bins,
    "age_squared": lambda rows, probs: _age_scaled(rows) ** 2,
    "site_x_age": _site_x_age,
    "age_x_logp": _age_x_logp,
}


@dataclass(frozen=True)
class FusionVariant:
    """One form of the fusion: the logistic stack's inverse regularisation ``C``, extra feature sets (names in
    :data:`EXTRAS`), and whether a per-class balanced-accuracy bias is fitted on top of it."""

    name: str
    C: float = 1.0
    extras: tuple[str, ...] = ()
    balanced_bias: bool = False

    def __post_init__(self) -> None:
        unknown = [e for e in self.extras if e not in EXTRAS]
        if unknown:
            raise ConfigError(f"unknown fusion feature set(s) {unknown}; allowed: {', '.join(EXTRAS)}")

    def lever(self) -> Lever:
        def fit(probs: np.ndarray, meta: np.ndarray, labels: np.ndarray):
            predict = fit_stack(probs, meta, labels, fields=METADATA_FIELDS, C=self.C).predict
            if not self.balanced_bias:
                return predict
            bias = fit_logit_bias(predict(probs, meta), labels)  # on the fitting rows only: cross_fit scores others
            return lambda p, m: apply_logit_bias(predict(p, m), bias)
        return Lever(self.name, fit)


VARIANTS = (
    FusionVariant("deployed (C = 1)"),
    *(FusionVariant(f"C = {c:g}", C=c) for c in (0.1, 0.3, 3.0, 10.0)),
    FusionVariant("+ age bins", extras=("age_bins",)),
    FusionVariant("+ age squared", extras=("age_squared",)),
    FusionVariant("+ site x age", extras=("site_x_age",)),
    FusionVariant("+ age x image log-probabilities", extras=("age_x_logp",)),
    FusionVariant("+ balanced-accuracy bias", balanced_bias=True),
    FusionVariant("+ age bins + balanced-accuracy bias", extras=("age_bins",), balanced_bias=True),
)


def screen_fusion_variants(held: HeldOut, rows: pd.DataFrame, *, variants: tuple[FusionVariant, ...] = VARIANTS,
                           seed: int = 0) -> pd.DataFrame:
    """Each variant cross-fitted on ``held`` (``rows``: its images' metadata rows, in order), paired against the
    first variant on the same images, with 95% intervals over lesions."""
    check_rows(rows, held)
    groups, labels = rows["lesion_id"].to_numpy(), held.labels
    base_meta = metadata_features(rows, METADATA_FIELDS)
    table, reference = [], None
    for variant in variants:
        start = time.perf_counter()
        meta = np.concatenate([base_meta, *(EXTRAS[e](rows, held.probs) for e in variant.extras)], axis=1)
        pred = cross_fit(variant.lever(), held.probs, meta, labels, groups, seed=seed).argmax(1)
        reference = pred if reference is None else reference
        row = paired_row(variant.name, labels=labels, pred=pred, ref=reference, groups=groups, minutes=float("nan"))
        row = {"variant": row.pop("lever"), "cpu_seconds": round(time.perf_counter() - start, 1),
               **{k: v for k, v in row.items() if k != "train_minutes"}}
        table.append(row)
        log.info("%s: balanced accuracy %.4f (%+.4f)", variant.name, row["balanced_accuracy"],
                 row["delta_balanced_accuracy"])
    return pd.DataFrame(table)
