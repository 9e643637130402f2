"""Metadata late fusion fitted for deployment on a whole cross-validation's out-of-fold predictions.

The stack (:class:`core.fusion.LogisticStack`: the image model's probabilities with age, sex and body site) is
fitted once on every out-of-fold image. Its figures come from the same fit cross-fitted over lesions — no image, and
no image of its lesion, in the data that scores it — paired against the image model on the same images. The result
is one JSON file with its provenance, for a card to carry.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.data.layout import load_table
from core.fusion import (
    METADATA_FIELDS,
    LogisticStack,
    check_fields,
    cross_fit,
    fit_stack,
    metadata_features,
    stack_lever,
)
from core.intervals import bootstrap_intervals, paired_differences
from core.jobs.cv.context import fold_run_id
from core.jobs.screen import SCREEN_METRICS, held_out
from core.metrics import per_class_recall
from core.provenance import git_sha
from core.store.results import ResultsStore

log = logging.getLogger(__name__)

FUSION_FORMAT = "lesionlite-fusion/1"


@dataclass(frozen=True)
class FusionFit:
    """The fitted stack, its cross-fitted figures (``fused``, ``image``, ``delta``: metric -> [point, low, high]),
    and where it was written."""

    stack: LogisticStack
    figures: dict[str, dict[str, list[float]]]
    path: Path


def _triples(intervals: dict[str, Any]) -> dict[str, list[float]]:
    return {m: [round(intervals[m].point, 4), round(intervals[m].low, 4), round(intervals[m].high, 4)]
            for m in SCREEN_METRICS}


def fit_fusion(store: ResultsStore, *, cv_id: str, folds: int, data_dir: str, out: str | Path,
               fields: tuple[str, ...] = METADATA_FIELDS, seed: int = 0) -> FusionFit:
    """Fit the stack on the ``folds`` fold runs of ``cv_id`` pooled, measure it cross-fitted, write ``out``."""
    fields = check_fields(fields)
    pooled = held_out(store, ",".join(fold_run_id(cv_id, i) for i in range(folds)))
    rows = load_table(data_dir).set_index("image_id").loc[pooled.image_ids].reset_index()
    meta, groups, labels = metadata_features(rows, fields), rows["lesion_id"].to_numpy(), pooled.labels
    fused = cross_fit(stack_lever("metadata_fusion", fields), pooled.probs, meta, labels, groups, seed=seed).argmax(1)
    image = pooled.probs.argmax(1)
    figures = {"fused": _triples(bootstrap_intervals(labels, fused, groups, seed=seed)),
               "image": _triples(bootstrap_intervals(labels, image, groups, seed=seed)),
               "delta": _triples(paired_differences(labels, fused, image, groups=groups, seed=seed))}
    recalls = {"fused": per_class_recall(labels, fused), "image": per_class_recall(labels, image)}
    stack = fit_stack(pooled.probs, meta, labels, fields=fields)
    document = {"format": FUSION_FORMAT, "stack": stack.to_dict(), "cross_fitted": figures,
                "per_class_recall": recalls,
                "fitted_on": {"cv_id": cv_id, "folds": folds, "split": "oof", "images": int(len(labels)),
                              "lesions": int(len(np.unique(groups))), "data_dir": str(data_dir), "seed": seed},
                "git_sha": git_sha()}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))
    log.info("fusion fitted on %d out-of-fold images of %s: balanced accuracy %.3f cross-fitted (image model %.3f)",
             len(labels), cv_id, figures["fused"]["balanced_accuracy"][0], figures["image"]["balanced_accuracy"][0])
    return FusionFit(stack, figures, path)
