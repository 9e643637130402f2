"""The screening decision: a sensitivity-first operating point and advice that never gets calmer with doubt.

A skin check's job is a reliable "see a dermatologist" signal, not the top-1 class. The operating point is a
threshold on the calibrated probability of a group of classes (the possibly-malignant group, and melanoma
alone), fitted on validation so that the group reaches a stated sensitivity there; it travels in the model's
card and every predictor applies it. The advice shown is the most urgent next step among the classes that are
plausible (calibrated probability at or above :data:`ADVICE_FLOOR`) and the operating point's referral, so a
less certain result can only be as urgent or more urgent than a confident one with the same probabilities. A result
shown as "uncertain" is never told "usually harmless": its next step is at least an appointment, so the two lines a
patient reads always agree.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from core.calibration import calibrated_softmax
from core.classes import CLASSES, POSSIBLY_MALIGNANT

log = logging.getLogger(__name__)

DEFAULT_MALIGNANT_SENSITIVITY = 0.90  # share of possibly-malignant lesions the referral must catch on validation
DEFAULT_MELANOMA_SENSITIVITY = 0.85
ADVICE_FLOOR = 0.20  # a class at or above this calibrated probability is plausible enough to set the advice
MALIGNANT_GROUP: tuple[str, ...] = tuple(c for c in CLASSES if c in POSSIBLY_MALIGNANT)
MELANOMA_GROUP: tuple[str, ...] = ("mel",)

# Urgency of the next step, most urgent last; the text a patient reads for each.
WATCH, APPOINTMENT, URGENT = 0, 1, 2
DISCLAIMER = ("Research tool, not a diagnosis. The output of this model must not be used to make medical "
              "decisions; see a clinician about any skin lesion that worries you.")  # beside every answer, every app
NEXT_STEPS = {
    URGENT: ("See a dermatologist or your doctor as soon as possible, within two weeks: tell them a skin check "
             "suggested a possible skin cancer and bring this report."),
    APPOINTMENT: ("Make an appointment with a dermatologist or your doctor within the next few weeks, and sooner if "
                  "it grows, bleeds or does not heal."),
    WATCH: ("Usually harmless. Keep an eye on it and see a doctor if it changes in size, shape or colour, bleeds, "
            "itches or looks different from your other moles."),
}


NEXT_STEPS_SHORT = {URGENT: "dermatologist within 2 weeks", APPOINTMENT: "dermatologist within weeks",
                    WATCH: "watch for changes"}


def class_urgency(dx: str) -> int:
    """How soon a lesion of this class should be seen: melanoma urgently, the other possibly-malignant classes
    within weeks, the benign ones watched."""
    if dx == "mel":
        return URGENT
    return APPOINTMENT if dx in POSSIBLY_MALIGNANT else WATCH


@dataclass(frozen=True)
class OperatingPoint:
    """Refer when the summed calibrated probability of ``group`` is at least ``threshold``."""

    group: tuple[str, ...]
    threshold: float
    target_sensitivity: float
    val_sensitivity: float  # what the threshold gave on the validation split it was fitted on
    val_specificity: float
    val_positives: int

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "group": list(self.group)}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> OperatingPoint:
        return cls(group=tuple(d["group"]), threshold=float(d["threshold"]),  # type: ignore[arg-type]
                   target_sensitivity=float(d["target_sensitivity"]),  # type: ignore[arg-type]
                   val_sensitivity=float(d["val_sensitivity"]),  # type: ignore[arg-type]
                   val_specificity=float(d["val_specificity"]), val_positives=int(d["val_positives"]))  # type: ignore[arg-type]


def group_probability(probs: np.ndarray, group: Sequence[str]) -> np.ndarray:
    """Summed probability of ``group``'s classes for each row of ``probs`` (N, classes in CLASSES order)."""
    unknown = [c for c in group if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown class(es) {unknown}; allowed: {', '.join(CLASSES)}")
    return np.asarray(probs, dtype=np.float64)[:, [CLASSES.index(c) for c in group]].sum(axis=1)


def fit_operating_point(labels: np.ndarray, probs: np.ndarray, *, group: Sequence[str],
                        target_sensitivity: float) -> OperatingPoint:
    """The highest threshold on the group's probability at which at least ``target_sensitivity`` of the group's
    images in ``labels`` are referred (the most specific point that meets the sensitivity)."""
    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    score = group_probability(probs, group)
    positive = np.isin(np.asarray(labels), [CLASSES.index(c) for c in group])
    if not positive.any() or positive.all():
        raise ValueError(f"fitting an operating point for {'+'.join(group)} needs images in and outside the group")
    ranked = np.sort(score[positive])[::-1]
    threshold = float(ranked[math.ceil(target_sensitivity * len(ranked) - 1e-9) - 1])
    sensitivity, specificity = sensitivity_specificity(positive, score >= threshold)
    return OperatingPoint(tuple(group), threshold, target_sensitivity, val_sensitivity=sensitivity,
                          val_specificity=specificity, val_positives=int(positive.sum()))


def sensitivity_specificity(positive: np.ndarray, referred: np.ndarray) -> tuple[float, float]:
    """Share of the positives referred and of the negatives not referred (NaN where a side has no image)."""
    positive, referred = np.asarray(positive, bool), np.asarray(referred, bool)
    return (float(referred[positive].mean()) if positive.any() else math.nan,
            float((~referred[~positive]).mean()) if (~positive).any() else math.nan)


@dataclass(frozen=True)
class Triage:
    """The two operating points a model's card carries: the possibly-malignant group and melanoma alone."""

    malignant: OperatingPoint
    melanoma: OperatingPoint
    fitted_on: str = "val"  # or a cross-validation's out-of-fold predictions (a refit model, a fusion)

    def to_dict(self) -> dict[str, object]:
        return {"fitted_on": self.fitted_on, "malignant": self.malignant.to_dict(),
                "melanoma": self.melanoma.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, object] | None) -> Triage | None:
        if not d:
            return None
        return cls(OperatingPoint.from_dict(d["malignant"]), OperatingPoint.from_dict(d["melanoma"]),  # type: ignore[arg-type]
                   str(d.get("fitted_on", "val")))


def fit_triage(labels: np.ndarray, probs: np.ndarray, *,
               malignant_sensitivity: float = DEFAULT_MALIGNANT_SENSITIVITY,
               melanoma_sensitivity: float = DEFAULT_MELANOMA_SENSITIVITY, fitted_on: str = "val") -> Triage:
    """Both operating points from held-out labels and calibrated probabilities (``fitted_on`` says which)."""
    return Triage(fit_operating_point(labels, probs, group=MALIGNANT_GROUP, target_sensitivity=malignant_sensitivity),
                  fit_operating_point(labels, probs, group=MELANOMA_GROUP, target_sensitivity=melanoma_sensitivity),
                  fitted_on)


def fit_triage_on_logits(logits: np.ndarray, labels: np.ndarray, *, temperature: float,
                         malignant_sensitivity: float = DEFAULT_MALIGNANT_SENSITIVITY,
                         melanoma_sensitivity: float = DEFAULT_MELANOMA_SENSITIVITY,
                         fitted_on: str = "val") -> Triage | None:
    """:func:`fit_triage` on validation logits with the model's temperature; None (logged) when the validation
    split lacks images in or outside a group (tiny synthetic sets)."""
    try:
        triage = fit_triage(labels, calibrated_softmax(logits, temperature), fitted_on=fitted_on,
                            malignant_sensitivity=malignant_sensitivity, melanoma_sensitivity=melanoma_sensitivity)
    except ValueError as exc:
        log.warning("no screening operating point: %s", exc)
        return None
    for point in (triage.malignant, triage.melanoma):
        log.info("operating point %s >= %.3f: val sensitivity %.3f, specificity %.3f (%d positives, target %.2f)",
                 "+".join(point.group), point.threshold, point.val_sensitivity, point.val_specificity,
                 point.val_positives, point.target_sensitivity)
    return triage


@dataclass(frozen=True)
class Decision:
    """What the site tells a patient about one image."""

    malignant_probability: float
    melanoma_probability: float
    refer: bool  # the possibly-malignant operating point is reached (None-free: False without one)
    refer_melanoma: bool
    urgency: int  # WATCH, APPOINTMENT or URGENT
    operating_point: bool  # whether the model's card had operating points (else top-class advice only)
    uncertain: bool  # shown as "uncertain" (confidence below the model's threshold): never the calm advice

    @property
    def next_step(self) -> str:
        return NEXT_STEPS[self.urgency]

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "next_step": self.next_step}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Decision:
        return cls(**{f: d[f] for f in cls.__dataclass_fields__})  # type: ignore[arg-type]


def decide(probs: Mapping[str, float] | np.ndarray, triage: Triage | None, *, uncertain: bool) -> Decision:
    """The decision for one image's calibrated probabilities (a class -> p mapping or a vector in CLASSES order).

    The urgency is the highest among the top class, every class at or above :data:`ADVICE_FLOOR`, the operating
    points' referrals (possibly malignant: within weeks; melanoma: urgent) and, for a result shown as
    ``uncertain``, an appointment. Spreading probability over more classes can only add candidates, so doubt
    never makes the advice calmer.
    """
    vector = (np.array([float(probs[c]) for c in CLASSES]) if isinstance(probs, Mapping)
              else np.asarray(probs, dtype=np.float64))
    malignant = float(group_probability(vector[None], MALIGNANT_GROUP)[0])
    melanoma = float(group_probability(vector[None], MELANOMA_GROUP)[0])
    refer = triage is not None and malignant >= triage.malignant.threshold
    refer_mel = triage is not None and melanoma >= triage.melanoma.threshold
    urgency = int(urgencies(vector[None], triage, uncertain=np.array([uncertain]))[0])
    return Decision(malignant, melanoma, refer, refer_mel, urgency, triage is not None, uncertain)


_CLASS_URGENCY = np.array([class_urgency(c) for c in CLASSES])


def urgencies(probs: np.ndarray, triage: Triage | None, *, uncertain: np.ndarray) -> np.ndarray:
    """The urgency of the advice for each row of calibrated ``probs`` (N, classes): the rule of :func:`decide`,
    for many images at once (one implementation: :func:`decide` calls it)."""
    probs = np.asarray(probs, dtype=np.float64)
    plausible = probs >= ADVICE_FLOOR
    plausible[np.arange(len(probs)), probs.argmax(axis=1)] = True
    urgency = np.where(plausible, _CLASS_URGENCY[None, :], WATCH).max(axis=1)
    if triage is not None:
        refer = group_probability(probs, triage.malignant.group) >= triage.malignant.threshold
        refer_mel = group_probability(probs, triage.melanoma.group) >= triage.melanoma.threshold
        urgency = np.maximum(urgency, np.where(refer_mel, URGENT, np.where(refer, APPOINTMENT, WATCH)))
    return np.where(np.asarray(uncertain, bool), np.maximum(urgency, APPOINTMENT), urgency)


def advice_misses(labels: np.ndarray, urgency: np.ndarray) -> dict[str, float]:
    """Shares told "usually harmless" (WATCH) among melanomas and among possibly-malignant lesions: the advice's
    miss rates, stored with every variant (NaN where the images hold none)."""
    labels, watch = np.asarray(labels), np.asarray(urgency) == WATCH
    out = {}
    for name, group in (("mel", MELANOMA_GROUP), ("malignant", MALIGNANT_GROUP)):
        members = np.isin(labels, [CLASSES.index(c) for c in group])
        out[f"advice_{name}_watch_share"] = float(watch[members].mean()) if members.any() else math.nan
    return out


def referral_metrics(labels: np.ndarray, probs: np.ndarray, triage: Triage) -> dict[str, np.ndarray]:
    """Per image: whether it is in each group and whether the operating point refers it (for evaluation)."""
    labels = np.asarray(labels)
    out = {}
    for name, point in (("malignant", triage.malignant), ("melanoma", triage.melanoma)):
        out[f"{name}_true"] = np.isin(labels, [CLASSES.index(c) for c in point.group])
        out[f"{name}_referred"] = group_probability(probs, point.group) >= point.threshold
    return out
