"""Post-hoc levers on a model's held-out probabilities, fitted nested so that no image scores itself.

Two levers, each a small model fitted on top of an image model's out-of-fold probabilities:

- a **per-class log-probability bias** tuned directly for balanced accuracy (coordinate ascent), and
- **metadata late fusion**: a multinomial logistic regression over the image model's log-probabilities and the
  metadata a patient gives (age, sex, body site), with missing values encoded explicitly (a patient may leave age
  out). ``dx_type`` is refused: it records how the label was confirmed (histopathology is mostly the malignant
  classes), so it leaks the label.

:func:`cross_fit` scores every image with a lever fitted on the *other* lesions only (lesion-grouped inner folds),
so its figures can be paired against the image model's on the same images.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from core.classes import CLASSES
from core.errors import ConfigError
from core.metrics import balanced_accuracy

log = logging.getLogger(__name__)

METADATA_FIELDS = ("age", "sex", "localization")
LEAKING_FIELDS = {"dx_type": "it records how the label was confirmed (histopathology for most malignant lesions)",
                  "dx": "it is the label", "label": "it is the label"}
SEXES = ("male", "female")
# HAM10000's body-site vocabulary (besides "unknown", which is encoded as missing)
LOCALIZATIONS = ("abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand", "lower extremity",
                 "neck", "scalp", "trunk", "upper extremity")
_EPS = 1e-7


def check_fields(fields: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The metadata fields a fusion may use; a label-leaking or unknown field is a ConfigError naming it."""
    for name in fields:
        if name in LEAKING_FIELDS:
            raise ConfigError(f"metadata field {name!r} is refused: {LEAKING_FIELDS[name]}, so it leaks the label; "
                              f"allowed: {', '.join(METADATA_FIELDS)}")
        if name not in METADATA_FIELDS:
            raise ConfigError(f"unknown metadata field {name!r}; allowed: {', '.join(METADATA_FIELDS)}")
    return tuple(fields)


def _one_hot(values: pd.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    """One column per known value and a last "missing" column (empty, unknown or unseen values)."""
    text = values.fillna("").astype(str).str.strip().str.lower()
    known = np.stack([(text == v).to_numpy() for v in vocabulary], axis=1)
    return np.concatenate([known, ~known.any(axis=1, keepdims=True)], axis=1).astype(np.float32)


def metadata_features(table: pd.DataFrame, fields: tuple[str, ...] = METADATA_FIELDS) -> np.ndarray:
    """Encode ``fields`` of ``table``'s rows: age / 100 with a missing flag, sex and body site one-hot with a
    missing column each. Columns absent from ``table`` count as missing for every row."""
    check_fields(fields)
    parts = []
    for name in fields:
        column = table[name] if name in table.columns else pd.Series([None] * len(table), index=table.index)
        if name == "age":
            age = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            missing = ~np.isfinite(age)
            parts.append(np.stack([np.where(missing, 0.0, age / 100.0), missing], axis=1).astype(np.float32))
        else:
            parts.append(_one_hot(column, SEXES if name == "sex" else LOCALIZATIONS))
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(table), 0), np.float32)


def fit_logit_bias(probs: np.ndarray, labels: np.ndarray, *, grid: np.ndarray | None = None,
                   rounds: int = 3) -> np.ndarray:
    """A per-class bias on log-probabilities that maximises balanced accuracy (coordinate ascent over ``grid``)."""
    grid = np.linspace(-3.0, 3.0, 61) if grid is None else grid
    scores = np.log(np.clip(probs, _EPS, 1.0))
    bias = np.zeros(probs.shape[1])
    best = balanced_accuracy(labels, scores.argmax(1))
    for _ in range(rounds):
        changed = False
        for c in range(probs.shape[1]):
            for value in grid:
                trial = bias.copy()
                trial[c] = value
                score = balanced_accuracy(labels, (scores + trial).argmax(1))
                if score > best + 1e-12:
                    best, bias, changed = score, trial, True
        if not changed:
            break
    return bias


@dataclass(frozen=True)
class Lever:
    """A post-hoc lever: ``fit(probs, meta, labels)`` returns ``predict(probs, meta) -> probabilities``."""

    name: str
    fit: Callable[[np.ndarray, np.ndarray, np.ndarray], Callable[[np.ndarray, np.ndarray], np.ndarray]]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _bias_lever(probs: np.ndarray, meta: np.ndarray, labels: np.ndarray):
    bias = fit_logit_bias(probs, labels)
    return lambda p, m: _softmax(np.log(np.clip(p, _EPS, 1.0)) + bias)


def _logistic(use_meta: bool, C: float = 1.0):
    def fit(probs: np.ndarray, meta: np.ndarray, labels: np.ndarray):
        def features(p: np.ndarray, m: np.ndarray) -> np.ndarray:
            logp = np.log(np.clip(p, _EPS, 1.0))
            return np.concatenate([logp, m], axis=1) if use_meta else logp

        model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
        model.fit(features(probs, meta), labels)
        present = model.classes_

        def predict(p: np.ndarray, m: np.ndarray) -> np.ndarray:
            out = np.zeros((len(p), len(CLASSES)))
            out[:, present] = model.predict_proba(features(p, m))
            return out

        return predict
    return fit


LEVERS = {
    "logit_bias": Lever("logit_bias", _bias_lever),
    "recalibrated": Lever("recalibrated", _logistic(use_meta=False)),  # the fusion model without metadata
    "metadata_fusion": Lever("metadata_fusion", _logistic(use_meta=True)),
}


def cross_fit(lever: Lever, probs: np.ndarray, meta: np.ndarray, labels: np.ndarray, groups: np.ndarray, *,
              k: int = 5, seed: int = 0) -> np.ndarray:
    """Every image's probabilities from ``lever`` fitted on the other lesions (k lesion-grouped, label-stratified
    inner folds): no image, and no image of its lesion, is in the data that scores it."""
    if not len(probs) == len(meta) == len(labels) == len(groups):
        raise ConfigError("cross_fit: probabilities, metadata, labels and lesion groups must have one row per image")
    out = np.zeros_like(probs, dtype=np.float64)
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # classes rarer than k lesions: still grouped, only less stratified
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(folds.split(probs, labels, groups))
    for fit_rows, held in splits:
        predict = lever.fit(probs[fit_rows], meta[fit_rows], labels[fit_rows])
        out[held] = predict(probs[held], meta[held])
    return out
