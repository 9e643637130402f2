"""Screening levers on one fold: each lever's held-out predictions paired against the control's on the same images.

A lever is either a training recipe (a ``cv_fold`` run of the same fold assignment and fold as the control, made
by ``scripts.cv --only-folds``), or a post-hoc lever from :mod:`core.fusion` fitted nested on a run's held-out
predictions (cross-fitted over lesions, so no image scores itself). Every row is the lever minus the control on the
images both scored, with a 95% interval over lesions, and what the lever cost in training minutes (the wall time
of its epochs as logged: a figure measured beside other work is said to be such by whoever reports it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.layout import load_table
from core.errors import ConfigError
from core.fusion import LEVERS, METADATA_FIELDS, cross_fit, metadata_features
from core.intervals import bootstrap_intervals, paired_differences
from core.jobs.cv.context import fold_run_id
from core.metrics import per_class_recall
from core.store.results import ResultsStore

log = logging.getLogger(__name__)

SCREEN_METRICS = ("balanced_accuracy", "mel_recall", "accuracy", "malignant_sensitivity")


def paired_columns(metrics: tuple[str, ...] = SCREEN_METRICS) -> list[str]:
    """A screening table's columns for ``metrics``: each figure, its paired difference and that interval."""
    return [c for m in metrics for c in (m, f"delta_{m}", f"delta_{m}_ci")]


@dataclass
class HeldOut:
    """One run's held-out predictions, in image-id order."""

    run_id: str
    image_ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    train_minutes: float


def _epoch_seconds(store: ResultsStore, run_id: str) -> float | None:
    """The wall seconds of a run's training epochs as logged (None: no history)."""
    return store.query("SELECT sum(value) AS s FROM history WHERE run_id = ? AND name = 'epoch_seconds'",
                       [run_id])["s"].iloc[0]


def held_out(store: ResultsStore, run_id: str, *, split: str = "oof", archive: Path | None = None) -> HeldOut:
    """A run's held-out predictions from the store, else from an archive folder written by :func:`archive_runs`
    (so a later session pairs new levers against a control without training it again). Runs joined by ``,`` (a
    cross-validation's folds) are pooled: every image once, scored by the fold model that did not train on it."""
    if "," in run_id:
        return pooled(run_id, [held_out(store, r, split=split, archive=archive) for r in run_id.split(",")])
    frame = store.query("SELECT image_id, label, probs FROM predictions WHERE run_id = ? AND split = ? "
                        "ORDER BY image_id", [run_id, split])
    seconds = _epoch_seconds(store, run_id)
    if frame.empty and archive is not None and (archive / f"{run_id}.parquet").is_file():
        frame = pd.read_parquet(archive / f"{run_id}.parquet").query("split == @split").sort_values("image_id")
        seconds = json.loads((archive / f"{run_id}.json").read_text()).get("epoch_seconds")
    if frame.empty:
        raise ConfigError(f"no stored {split!r} predictions for run {run_id!r}"
                          + (f" (nor in the archive {archive})" if archive is not None else ""))
    return HeldOut(run_id, frame["image_id"].to_numpy(dtype=str), frame["label"].to_numpy(),
                   np.stack(frame["probs"].to_numpy()).astype(np.float64),
                   float(seconds) / 60 if seconds is not None and pd.notna(seconds) else float("nan"))


def pooled(run_id: str, parts: list[HeldOut]) -> HeldOut:
    """Held-out predictions of several runs as one, in image-id order; runs that share an image are refused."""
    ids = np.concatenate([p.image_ids for p in parts])
    if len(np.unique(ids)) != len(ids):
        raise ConfigError(f"the runs {run_id!r} share held-out images: pool folds of one cross-validation only")
    order = np.argsort(ids)
    return HeldOut(run_id, ids[order], np.concatenate([p.labels for p in parts])[order],
                   np.concatenate([p.probs for p in parts])[order], sum(p.train_minutes for p in parts))


def cv_held_out(store: ResultsStore, cv_id: str, folds: int) -> HeldOut:
    """Every out-of-fold prediction of a finished cross-validation, pooled: each image once, from the fold model
    that did not train on it."""
    return held_out(store, ",".join(fold_run_id(cv_id, i) for i in range(folds)))


def metadata_rows(data_dir: str, image_ids: np.ndarray) -> pd.DataFrame:
    """The dataset's metadata rows (lesion id, age, sex, body site) of ``image_ids``, in that order."""
    return load_table(data_dir).set_index("image_id").loc[image_ids].reset_index()


def check_rows(rows: pd.DataFrame, held: HeldOut) -> None:
    """Refuse metadata rows that are not ``held``'s images in its order (as :func:`metadata_rows` returns them)."""
    if list(rows["image_id"].astype(str)) != list(held.image_ids):
        raise ConfigError("metadata rows must be the held-out images, in the same order")


def archive_runs(store: ResultsStore, run_ids: list[str], folder: Path) -> list[Path]:
    """Each run's held-out and test predictions as Parquet, with its provenance (config, git SHA, split hash, seed)
    and epoch seconds as JSON: small enough to commit, enough to screen against later."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for run_id in run_ids:
        preds = store.query("SELECT split, image_id, label, probs FROM predictions WHERE run_id = ? "
                            "ORDER BY split, image_id", [run_id])
        runs = store.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if preds.empty or runs.empty:
            raise ConfigError(f"run {run_id!r} has no stored predictions to archive")
        preds.to_parquet(folder / f"{run_id}.parquet", index=False)
        run = runs.iloc[0]
        seconds = _epoch_seconds(store, run_id)
        record = {"run_id": run_id, "git_sha": run["git_sha"], "seed": int(run["seed"]),
                  "split_hash": run["split_hash"], "dataset_fingerprint": run["dataset_fingerprint"],
                  "config": json.loads(run["config"]) if isinstance(run["config"], str) else run["config"],
                  "epoch_seconds": None if pd.isna(seconds) else float(seconds),
                  "metrics": store.metrics(run_id).query("split == 'oof'").set_index("name")["value"].to_dict()}
        (folder / f"{run_id}.json").write_text(json.dumps(record, indent=1, default=str))
        written += [folder / f"{run_id}.parquet", folder / f"{run_id}.json"]
    return written


def _common(a: HeldOut, b: HeldOut) -> tuple[np.ndarray, np.ndarray]:
    common, ia, ib = np.intersect1d(a.image_ids, b.image_ids, return_indices=True)
    if not len(common):
        raise ConfigError(f"{a.run_id} and {b.run_id} scored no image in common: not the same fold")
    if (a.labels[ia] != b.labels[ib]).any():
        raise ConfigError(f"{a.run_id} and {b.run_id} disagree on labels of the same images: not the same data")
    return ia, ib


def paired_row(name: str, *, labels: np.ndarray, pred: np.ndarray, ref: np.ndarray, groups: np.ndarray,
               minutes: float) -> dict[str, object]:
    figures = bootstrap_intervals(labels, pred, groups)
    diff = paired_differences(labels, pred, ref, groups=groups)
    row: dict[str, object] = {"lever": name, "images": len(labels), "train_minutes": round(minutes, 3)}
    for m in SCREEN_METRICS:
        row[m] = round(figures[m].point, 4)
        row[f"delta_{m}"] = round(diff[m].point, 4)
        row[f"delta_{m}_ci"] = f"[{diff[m].low:+.3f}, {diff[m].high:+.3f}]"
    for name_, recall in per_class_recall(labels, pred).items():
        row[f"recall_{name_}"] = round(recall, 3) if recall is not None else None
    return row


def screen(store: ResultsStore, *, control: str, levers: list[str], data_dir: str, split: str = "oof",
           posthoc: tuple[str, ...] = tuple(LEVERS), seed: int = 0, archive: Path | None = None) -> pd.DataFrame:
    """The screening table: the control, each lever run, and each post-hoc lever on every run, minus the control.

    Rows of post-hoc levers on a lever run are paired against the control too (their column ``on`` names the run).
    Metadata fusion's row also carries what the metadata adds by itself: fusion minus the same model fitted without
    metadata (``metadata_own_delta_*``), paired.
    """
    unknown = [p for p in posthoc if p not in LEVERS]
    if unknown:
        raise ConfigError(f"unknown post-hoc lever(s) {unknown}; allowed: {', '.join(LEVERS)}")
    table = load_table(data_dir).set_index("image_id")
    base = held_out(store, control, split=split, archive=archive)
    missing = np.setdiff1d(base.image_ids, table.index.to_numpy(dtype=str))
    if len(missing):
        raise ConfigError(f"{data_dir}: {len(missing)} held-out image(s) of {control} not in its metadata, "
                          f"e.g. {', '.join(missing[:3])}")
    rows = []
    for run in [base, *(held_out(store, r, split=split, archive=archive) for r in levers)]:
        ia, ib = _common(run, base)
        ids = run.image_ids[ia]
        labels, groups = run.labels[ia], table.loc[ids, "lesion_id"].to_numpy()
        ref = base.probs[ib].argmax(1)
        tag = "control" if run is base else run.run_id
        rows.append({"on": tag, **paired_row("(as trained)", labels=labels, pred=run.probs[ia].argmax(1), ref=ref,
                                             groups=groups, minutes=run.train_minutes)})
        meta = metadata_features(table.loc[ids].reset_index(), METADATA_FIELDS)
        fitted: dict[str, np.ndarray] = {}
        for name in posthoc:
            fitted[name] = cross_fit(LEVERS[name], run.probs[ia], meta, labels, groups, seed=seed).argmax(1)
            rows.append({"on": tag, **paired_row(name, labels=labels, pred=fitted[name], ref=ref, groups=groups,
                                                 minutes=run.train_minutes)})
            log.info("%s + %s: balanced accuracy %.4f", tag, name, rows[-1]["balanced_accuracy"])
        if {"metadata_fusion", "recalibrated"} <= fitted.keys():  # what the metadata adds by itself, paired
            own = paired_differences(labels, fitted["metadata_fusion"], fitted["recalibrated"], groups=groups)
            for m in SCREEN_METRICS:
                rows[-1][f"metadata_own_delta_{m}"] = round(own[m].point, 4)
                rows[-1][f"metadata_own_delta_{m}_ci"] = f"[{own[m].low:+.3f}, {own[m].high:+.3f}]"
    return pd.DataFrame(rows)
