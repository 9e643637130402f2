"""The cross-validation's summary once every fold is stored: pooled out-of-fold figures with lesion-level
intervals, TTA's paired gain, the fold ensemble on test, the out-of-fold learning curve."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from core.calibration import calibrated_softmax
from core.data.folds import folds_hash
from core.intervals import interval_metrics, paired_differences
from core.jobs.cv.context import CV_FILE, CVContext, fold_run_id
from core.metrics import Evaluation, evaluate_predictions
from core.provenance import Provenance
from core.store.results import Predictions, ResultsStore, RunRecord


def _fold_predictions(store: ResultsStore, cv_id: str, k: int) -> pd.DataFrame:
    ids = [fold_run_id(cv_id, i) for i in range(k)]
    return store.query("SELECT run_id, split, image_id, label, probs FROM predictions WHERE list_contains(?, run_id) "
                       "ORDER BY run_id, split, image_id", [ids])


def _stack(frame: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    return frame["image_id"].tolist(), frame["label"].to_numpy(), np.stack(frame["probs"].to_numpy())


def oof_curve(ctx: CVContext) -> pd.DataFrame:
    """Pooled out-of-fold accuracy, balanced accuracy and melanoma recall after each epoch (argmax figures:
    calibration does not move them)."""
    per_fold = [np.load(ctx.folder / f"fold{i}" / "oof_epochs.npz") for i in range(ctx.cv.folds)]
    epochs = min(len(f["logits"]) for f in per_fold)
    labels = np.concatenate([f["labels"] for f in per_fold])
    groups = ctx.groups(np.concatenate([f["image_ids"] for f in per_fold]))
    rows = []
    for e in range(epochs):
        probs = np.concatenate([calibrated_softmax(f["logits"][e]) for f in per_fold])
        m = evaluate_predictions(labels, probs, groups=groups).metrics
        rows.append({"epoch": e, **{f"oof_{k}": m[k] for k in ("accuracy", "balanced_accuracy", "mel_recall",
                                                                  "auc_macro_ovr")},
                     "oof_balanced_accuracy_ci_low": m["balanced_accuracy_ci_low"],
                     "oof_balanced_accuracy_ci_high": m["balanced_accuracy_ci_high"]})
    return pd.DataFrame(rows)


def summarise(ctx: CVContext, store: ResultsStore) -> tuple[RunRecord, pd.DataFrame]:
    """The pooled out-of-fold figures, TTA's paired gain and the fold ensemble on test, as one ``cv`` run."""
    preds = _fold_predictions(store, ctx.cv_id, ctx.cv.folds)
    evaluations: dict[str, Evaluation] = {}
    predictions: dict[str, Predictions] = {}
    scalars: dict[str, dict[str, float]] = {}
    pooled: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}
    for name in ("oof", "oof_tta"):
        part = preds[preds["split"] == name].sort_values("image_id")
        if part.empty:
            continue
        ids, labels, probs = _stack(part)
        pooled[name] = ids, labels, probs
        evaluations[name] = evaluate_predictions(labels, probs, groups=ctx.groups(ids))
        predictions[name] = Predictions(ids, labels, probs)
    if "oof_tta" in pooled:
        ids, labels, plain = pooled["oof"]
        gain = paired_differences(labels, pooled["oof_tta"][2].argmax(1), plain.argmax(1), groups=ctx.groups(ids))
        scalars["oof_tta_vs_oof"] = interval_metrics(gain, prefix="delta_")
    for name in ("test", "test_tta"):
        part = preds[preds["split"] == name]
        if part.empty:
            continue
        members = [_stack(g.sort_values("image_id")) for _, g in part.groupby("run_id")]
        ids, labels = members[0][0], members[0][1]
        probs = np.mean([m[2] for m in members], axis=0)  # each member's temperature-scaled probabilities
        key = name.replace("test", "test_ensemble")
        evaluations[key] = evaluate_predictions(labels, probs, groups=ctx.groups(ids))
        predictions[key] = Predictions(ids, labels, probs)
    curve = oof_curve(ctx)
    provenance = Provenance.here(dataset=ctx.recipe.data_dir, dataset_fingerprint=ctx.data.fingerprint,
                                 split_hash=folds_hash(ctx.folds), seed=ctx.recipe.seed, device=ctx.device)
    record = RunRecord(run_id=ctx.cv_id, kind="cv", model=ctx.recipe.model, variant=f"cv{ctx.cv.folds}",
                       config={**asdict(ctx.recipe), "cv": asdict(ctx.cv)}, provenance=provenance,
                       evaluations=evaluations, scalars=scalars, predictions=predictions,
                       history=curve.to_dict("records"),
                       artifacts={"folds": ctx.folder / "folds.csv", "config": ctx.folder / CV_FILE})
    return record, curve
