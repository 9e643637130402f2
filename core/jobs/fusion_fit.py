"""Metadata late fusion fitted for deployment on a whole cross-validation's out-of-fold predictions.

The stack (:class:`core.fusion.LogisticStack`: the image model's probabilities with age, sex and body site) is
fitted once on every out-of-fold image. Its figures come from the same fit cross-fitted over lesions — no image, and
no image of its lesion, in the data that scores it — paired against the image model on the same images; its
temperature, "uncertain" threshold and screening operating points are fitted on those cross-fitted probabilities.
The result is one :class:`core.fusion.MetadataFusion` record in a JSON file with its provenance, which
:func:`attach_fusion` writes into a deployable variant's card.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.artifacts.card import Card, read_variant_card, write_variant
from core.calibration import DEFAULT_TARGET_ACCURACY, calibrated_softmax, fit_calibration
from core.errors import ModelError
from core.fusion import (
    METADATA_FIELDS,
    MetadataFusion,
    check_fields,
    cross_fit,
    fit_stack,
    log_probabilities,
    metadata_features,
    stack_lever,
)
from core.intervals import bootstrap_intervals, paired_differences
from core.jobs.screen import SCREEN_METRICS, cv_held_out, held_out, metadata_rows
from core.metrics import expected_calibration_error, per_class_recall
from core.provenance import git_sha
from core.serve.deployed import Scores
from core.store.results import ResultsStore
from core.triage import fit_triage_on_logits

log = logging.getLogger(__name__)

FUSION_FORMAT = "lesionlite-fusion/2"


@dataclass(frozen=True)
class FusionFit:
    """The fitted record (its ``cross_fitted`` figures: ``fused``, ``image``, ``delta``: metric -> [point, low,
    high]) and where it was written."""

    fusion: MetadataFusion
    path: Path

    @property
    def figures(self) -> dict[str, dict[str, list[float]]]:
        return self.fusion.cross_fitted


def _triples(intervals: dict[str, Any]) -> dict[str, list[float]]:
    return {m: [round(intervals[m].point, 4), round(intervals[m].low, 4), round(intervals[m].high, 4)]
            for m in SCREEN_METRICS}


def fit_fusion(store: ResultsStore, *, cv_id: str, folds: int, data_dir: str, out: str | Path,
               fields: tuple[str, ...] = METADATA_FIELDS, seed: int = 0,
               target_accuracy: float = DEFAULT_TARGET_ACCURACY) -> FusionFit:
    """Fit the stack on the ``folds`` fold runs of ``cv_id`` pooled, measure it and fit its calibration and
    operating points cross-fitted, write ``out``."""
    fields = check_fields(fields)
    pooled = cv_held_out(store, cv_id, folds)
    rows = metadata_rows(data_dir, pooled.image_ids)
    meta, groups, labels = metadata_features(rows, fields), rows["lesion_id"].to_numpy(), pooled.labels
    crossed = cross_fit(stack_lever("metadata_fusion", fields), pooled.probs, meta, labels, groups, seed=seed)
    fused, image = crossed.argmax(1), pooled.probs.argmax(1)
    figures: dict[str, Any] = {
        "fused": _triples(bootstrap_intervals(labels, fused, groups, seed=seed)),
        "image": _triples(bootstrap_intervals(labels, image, groups, seed=seed)),
        "delta": _triples(paired_differences(labels, fused, image, groups=groups, seed=seed)),
        "per_class_recall": {"fused": per_class_recall(labels, fused), "image": per_class_recall(labels, image)}}
    crossed_logits = log_probabilities(crossed)
    temperature, threshold = fit_calibration(crossed_logits, labels, target_accuracy=target_accuracy)
    triage = fit_triage_on_logits(crossed_logits, labels, temperature=temperature,
                                  fitted_on=f"cross-fitted fused out-of-fold probabilities of {cv_id}")
    figures["ece"] = {"fused": expected_calibration_error(labels, calibrated_softmax(crossed_logits, temperature)),
                      "image": expected_calibration_error(labels, pooled.probs)}
    if triage is None:
        raise ModelError(f"{cv_id}: its out-of-fold images cannot fit screening operating points for the fusion")
    fusion = MetadataFusion(
        stack=fit_stack(pooled.probs, meta, labels, fields=fields), temperature=temperature,
        uncertain_threshold=threshold, triage=triage,
        fitted_on={"cv_id": cv_id, "folds": folds, "split": "oof", "images": int(len(labels)),
                   "lesions": int(len(np.unique(groups))), "data_dir": str(data_dir), "seed": seed,
                   "target_accuracy": target_accuracy, "git_sha": git_sha()},
        cross_fitted=figures)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": FUSION_FORMAT, "fusion": fusion.to_dict()}, indent=2))
    log.info("fusion fitted on %d out-of-fold images of %s: balanced accuracy %.3f cross-fitted (image model %.3f)",
             len(labels), cv_id, figures["fused"]["balanced_accuracy"][0], figures["image"]["balanced_accuracy"][0])
    return FusionFit(fusion, path)


def score_fusion(store: ResultsStore, fusion: MetadataFusion, *, run: str, data_dir: str, seed: int = 0,
                 image_card: Card | None = None) -> dict[str, Any]:
    """``fusion`` applied to a stored run's predictions (``run``: ``<run id>:<split>``, e.g. the deployed cell's
    ``test``) with each image's metadata from ``data_dir``: fused and image figures with lesion-level intervals,
    their paired difference, and per-class recall; with ``image_card`` (the run's own), what a patient meets with
    each ("uncertain" share, referral, melanomas told "usually harmless") at each one's own thresholds and
    operating points. For the test split: read once, at the end."""
    run_id, _, split = run.partition(":")
    scored = held_out(store, run_id, split=split or "test")
    rows = metadata_rows(data_dir, scored.image_ids)
    groups, labels = rows["lesion_id"].to_numpy(), scored.labels
    fused_probs = fusion.probabilities(scored.probs, rows)
    fused, image = fused_probs.argmax(1), scored.probs.argmax(1)
    met = {}
    if image_card is not None and image_card.uncertain_threshold is not None:
        met = {"image": Scores(scored.probs, labels, scored.probs.max(1) < image_card.uncertain_threshold
                               ).deployment_metrics(image_card.triage),
               "fused": Scores(fused_probs, labels, fused_probs.max(1) < fusion.uncertain_threshold
                               ).deployment_metrics(fusion.triage)}
    return {"images": int(len(labels)), "lesions": int(len(np.unique(groups))), "what_patients_meet": met,
            "fused": _triples(bootstrap_intervals(labels, fused, groups, seed=seed)),
            "image": _triples(bootstrap_intervals(labels, image, groups, seed=seed)),
            "delta": _triples(paired_differences(labels, fused, image, groups=groups, seed=seed)),
            "per_class_recall": {"fused": per_class_recall(labels, fused), "image": per_class_recall(labels, image)}}


def read_fusion(path: str | Path) -> MetadataFusion:
    """The record :func:`fit_fusion` wrote; another file is a :class:`ModelError` naming the problem."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read the fusion file {path}: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FUSION_FORMAT:
        raise ModelError(f"{path}: not a fusion file of format {FUSION_FORMAT!r} (scripts.fit_fusion writes one)")
    return MetadataFusion.from_dict(document["fusion"], source=str(path))


def attach_fusion(folder: str | Path, fusion: MetadataFusion) -> None:
    """Write ``fusion`` into the card of the deployable variant in ``folder`` (replacing one it had)."""
    card = read_variant_card(folder)
    card.fusion = fusion
    write_variant(folder, model_file=str(card.file), card=card)
    log.info("fusion of %s attached to %s", fusion.fitted_on.get("cv_id"), folder)
