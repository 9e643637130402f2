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
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from core.classes import CLASSES
from core.errors import ConfigError, ModelError
from core.metrics import balanced_accuracy
from core.triage import Triage

log = logging.getLogger(__name__)

METADATA_FIELDS = ("age", "sex", "localization")
LEAKING_FIELDS = {"dx_type": "it records how the label was confirmed (histopathology for most malignant lesions)",
                  "dx": "it is the label", "label": "it is the label"}
SEXES = ("male", "female")
# HAM10000's body-site vocabulary (besides "unknown", which is encoded as missing)
LOCALIZATIONS = ("abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand", "lower extremity",
                 "neck", "scalp", "trunk", "upper extremity")
_EPS = 1e-7


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities, clipped so that a class given probability 0 stays finite: what every stack works on."""
    return np.log(np.clip(probs, _EPS, 1.0))


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
    scores = log_probabilities(probs)
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


def apply_logit_bias(probs: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``probs`` with a per-class bias added to their log-probabilities (see :func:`fit_logit_bias`)."""
    return _softmax(log_probabilities(probs) + bias)


def _bias_lever(probs: np.ndarray, meta: np.ndarray, labels: np.ndarray):
    bias = fit_logit_bias(probs, labels)
    return lambda p, m: apply_logit_bias(p, bias)


@dataclass(frozen=True)
class LogisticStack:
    """A multinomial logistic regression over an image model's log-probabilities (and, for metadata fusion, the
    encoded ``fields``): the fitted numbers only, so that a card can carry it and a phone can apply it (a matrix
    product and a softmax). ``classes``: the class indices it was fitted on, in :data:`CLASSES` order."""

    fields: tuple[str, ...]
    coef: np.ndarray  # (len(classes), len(CLASSES) + metadata columns)
    intercept: np.ndarray  # (len(classes),)
    classes: tuple[int, ...]

    def features(self, probs: np.ndarray, meta: np.ndarray) -> np.ndarray:
        logp = log_probabilities(probs)
        return np.concatenate([logp, meta], axis=1) if self.fields else logp

    def predict(self, probs: np.ndarray, meta: np.ndarray) -> np.ndarray:
        """Probabilities over every class (0 for a class it never saw); ``meta`` as :func:`metadata_features`
        encodes ``fields``."""
        out = np.zeros((len(probs), len(CLASSES)))
        out[:, list(self.classes)] = _softmax(self.features(probs, meta) @ self.coef.T + self.intercept)
        return out

    def to_dict(self) -> dict[str, object]:
        return {"fields": list(self.fields), "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "classes": [CLASSES[i] for i in self.classes]}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> LogisticStack:
        return cls(fields=check_fields(list(d["fields"])), coef=np.asarray(d["coef"], dtype=np.float64),
                   intercept=np.asarray(d["intercept"], dtype=np.float64),
                   classes=tuple(CLASSES.index(c) for c in d["classes"]))


def fit_stack(probs: np.ndarray, meta: np.ndarray, labels: np.ndarray, *, fields: tuple[str, ...],
              C: float = 1.0) -> LogisticStack:
    """Fit :class:`LogisticStack` (classes weighted to balance, as balanced accuracy weighs them); ``meta`` encodes
    ``fields`` (empty: the image model's probabilities alone, recalibrated)."""
    stack = LogisticStack(check_fields(fields), np.zeros(0), np.zeros(0), ())
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
    model.fit(stack.features(probs, meta), labels)
    coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    if len(model.classes_) == 2:  # one logit z for the second class: softmax of (-z/2, z/2) is its sigmoid
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return LogisticStack(stack.fields, coef, intercept, tuple(int(c) for c in model.classes_))


def stack_lever(name: str, fields: tuple[str, ...]) -> Lever:
    """:func:`fit_stack` over ``fields`` as a post-hoc lever (empty ``fields``: the recalibration)."""
    return Lever(name, lambda probs, meta, labels: fit_stack(probs, meta, labels, fields=fields).predict)


LEVERS = {
    "logit_bias": Lever("logit_bias", _bias_lever),
    "recalibrated": stack_lever("recalibrated", ()),  # the fusion model without metadata
    "metadata_fusion": stack_lever("metadata_fusion", METADATA_FIELDS),
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


@dataclass(frozen=True)
class PatientMetadata:
    """What a patient may say besides the photo, each part optional: age in years, sex (:data:`SEXES`) and body
    site (:data:`LOCALIZATIONS`, HAM10000's vocabulary). Nothing given: the image model's answer alone."""

    age: float | None = None
    sex: str | None = None
    localization: str | None = None

    def __post_init__(self) -> None:
        if self.age is not None and not (isinstance(self.age, int | float) and 0 <= self.age <= 120):
            raise ConfigError(f"age must be a number of years from 0 to 120, got {self.age!r}")
        if self.sex is not None and self.sex not in SEXES:
            raise ConfigError(f"unknown sex {self.sex!r}; allowed: {', '.join(SEXES)} (or leave it out)")
        if self.localization is not None and self.localization not in LOCALIZATIONS:
            raise ConfigError(f"unknown body site {self.localization!r}; allowed: {', '.join(LOCALIZATIONS)} "
                              "(or leave it out)")

    @classmethod
    def parse(cls, *, age: object = None, sex: object = None, localization: object = None) -> PatientMetadata:
        """From form or JSON values: empty strings are "not given", text is trimmed and lower-cased, an age may be
        a numeric string; anything else is a :class:`ConfigError` naming the allowed values."""
        def text(value: object) -> str | None:
            value = str(value).strip().lower() if value is not None else ""
            return value or None

        age_text = text(age)
        try:
            age_value = float(age_text) if age_text is not None else None
        except ValueError:
            raise ConfigError(f"age must be a number of years from 0 to 120, got {age!r}") from None
        return cls(age=age_value, sex=text(sex), localization=text(localization))

    @property
    def given(self) -> tuple[str, ...]:
        """The fields the patient gave, in :data:`METADATA_FIELDS` order."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name) is not None)

    def frame(self) -> pd.DataFrame:
        """One row with the HAM10000 metadata columns, for :func:`metadata_features`."""
        return pd.DataFrame([{name: getattr(self, name) for name in METADATA_FIELDS}])

    def to_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.given}


@dataclass(frozen=True)
class MetadataFusion:
    """Metadata late fusion as a card carries it: the stack, and the temperature, "uncertain" threshold and
    screening operating points fitted on its own cross-fitted probabilities (the image model's do not apply to
    fused probabilities), with where it was fitted and what it measured there."""

    stack: LogisticStack
    temperature: float
    uncertain_threshold: float
    triage: Triage
    fitted_on: dict[str, Any]  # the cross-validation and its out-of-fold images
    cross_fitted: dict[str, Any]  # fused, image and paired delta: metric -> [point, low, high]

    def probabilities(self, image_probs: np.ndarray, metadata: PatientMetadata | pd.DataFrame) -> np.ndarray:
        """Calibrated fused probabilities from the image model's calibrated probabilities (one row per image)."""
        table = metadata.frame() if isinstance(metadata, PatientMetadata) else metadata
        fused = self.stack.predict(np.asarray(image_probs, dtype=np.float64),
                                   metadata_features(table, self.stack.fields))
        return _softmax(log_probabilities(fused) / self.temperature)

    def to_dict(self) -> dict[str, Any]:
        return {"stack": self.stack.to_dict(), "temperature": self.temperature,
                "uncertain_threshold": self.uncertain_threshold, "triage": self.triage.to_dict(),
                "fitted_on": self.fitted_on, "cross_fitted": self.cross_fitted}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "fusion") -> MetadataFusion:
        """Read back what :meth:`to_dict` wrote; anything else is a :class:`ModelError` naming the problem."""
        expected = {"stack", "temperature", "uncertain_threshold", "triage", "fitted_on", "cross_fitted"}
        if set(d) != expected:
            raise ModelError(f"{source}: a fusion record has the fields {', '.join(sorted(expected))}; "
                             f"got {', '.join(sorted(d))}")
        triage = Triage.from_dict(d["triage"])
        if triage is None:
            raise ModelError(f"{source}: the fusion record has no screening operating points")
        try:
            stack = LogisticStack.from_dict(d["stack"])
        except ConfigError as exc:  # e.g. a label-leaking field
            raise ModelError(f"{source}: {exc}") from None
        return cls(stack=stack, temperature=float(d["temperature"]),
                   uncertain_threshold=float(d["uncertain_threshold"]), triage=triage,
                   fitted_on=dict(d["fitted_on"]), cross_fitted=dict(d["cross_fitted"]))
