"""Summaries of stored runs, read back from the results store: a run in plain text, two runs compared on the same
images (paired), a cross-validation's figures with their intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ConfigError, ModelError
from core.intervals import bootstrap_intervals, paired_differences
from core.metrics import METRIC_NAMES
from core.store.results import ResultsStore


def run_summary(store: ResultsStore, run_id: str) -> str:
    """One row per split of ``run_id`` with every scalar metric, plus the run's provenance."""
    run = store.query("SELECT model, variant, git_sha, seed, split_hash, dataset_fingerprint, device "
                      "FROM runs WHERE run_id = ?", [run_id])
    if run.empty:
        raise KeyError(f"run {run_id} is not in {store.path}")
    table = store.metrics(run_id).pivot(index="split", columns="name", values="value")
    table = table[[m for m in METRIC_NAMES if m in table.columns]]
    epochs = store.query("SELECT count(DISTINCT epoch) AS n FROM history WHERE run_id = ?", [run_id])["n"][0]
    r = run.iloc[0]
    header = (f"run {run_id}: {r.model} ({r.variant}), {epochs} epochs, seed {r.seed}, split {r.split_hash}, "
              f"data {r.dataset_fingerprint}, git {r.git_sha[:12]}, {r.device}")
    return header + "\n" + table.to_string(float_format=lambda x: f"{x:.4f}")


def _run_split(ref: str) -> tuple[list[str], list[str]]:
    """``run_id[,run_id...][:split[+split...]]``: the runs and the splits whose predictions are pooled (default:
    test), e.g. the folds of a cross-validation done so far on ``oof``."""
    run_ids, _, splits = ref.partition(":")
    return run_ids.split(","), (splits or "test").split("+")


def paired_comparison(store: ResultsStore, a: str, b: str, *, lesions_csv: str | Path,
                      store_b: ResultsStore | None = None) -> pd.DataFrame:
    """Figures of two models' stored predictions on the images both scored, and A - B paired over the same lesion
    draws: rows per metric, columns A, B, A - B with their 95% intervals. ``a`` and ``b``: ``run_id[:split]``,
    splits pooled with ``+`` (``run_id:val+test``), runs pooled with ``,`` (the folds of a cross-validation:
    ``cv-fold0,cv-fold1:oof``); ``store_b``: B's store where it is not A's."""
    frames = []
    for ref, source in ((a, store), (b, store_b or store)):
        run_ids, splits = _run_split(ref)
        part = source.query("SELECT image_id, label, probs FROM predictions "
                            "WHERE list_contains(?, run_id) AND list_contains(?, split) ORDER BY image_id",
                            [run_ids, splits])
        if part.empty or part["image_id"].duplicated().any():
            raise ConfigError(f"no stored predictions for run {','.join(run_ids)!r} on split {'+'.join(splits)!r}"
                              if part.empty else f"{ref}: an image is in more than one of these runs or splits")
        frames.append(part.set_index("image_id"))
    common = frames[0].index.intersection(frames[1].index)
    if common.empty:
        raise ConfigError(f"{a} and {b} scored no image in common")
    first, second = frames[0].loc[common], frames[1].loc[common]
    if (first["label"] != second["label"]).any():
        raise ConfigError(f"{a} and {b} disagree on the labels of the same images: not the same data")
    lesions = pd.read_csv(lesions_csv, usecols=["image_id", "lesion_id"]).drop_duplicates().set_index("image_id")
    missing = common.difference(lesions.index)
    if len(missing):
        raise ConfigError(f"{lesions_csv}: no lesion id for {len(missing)} image(s), e.g. {', '.join(missing[:3])}")
    groups = lesions.loc[common, "lesion_id"].to_numpy()
    labels = first["label"].to_numpy()
    pred_a, pred_b = (np.stack(f["probs"].to_numpy()).argmax(1) for f in (first, second))
    ia, ib = bootstrap_intervals(labels, pred_a, groups), bootstrap_intervals(labels, pred_b, groups)
    diff = paired_differences(labels, pred_a, pred_b, groups=groups)
    table = pd.DataFrame({"A": {k: str(v) for k, v in ia.items()}, "B": {k: str(v) for k, v in ib.items()},
                          "A - B (paired)": {k: f"{v.point:+.3f} [{v.low:+.3f}, {v.high:+.3f}]"
                                             for k, v in diff.items()}})
    table.attrs.update(images=len(common), lesions=len(set(groups)))
    return table


CV_ROWS = {"oof": "out of fold", "oof_tta": "out of fold, flip TTA", "test_ensemble": "test, fold ensemble",
           "test_ensemble_tta": "test, fold ensemble + TTA"}


CV_FIGURES = ("balanced_accuracy", "mel_recall", "malignant_sensitivity", "malignant_specificity", "accuracy")


def with_interval(metrics: pd.Series | dict, name: str) -> str:
    """``0.740 [0.701, 0.779]``, or the bare figure where no interval was stored."""
    value = metrics.get(name)
    if value is None or pd.isna(value):
        return "–"
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    return f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and pd.notna(low) else "")


def cv_summary(store: ResultsStore, cv_id: str) -> pd.DataFrame:
    """A cross-validation's figures, one row per scoring (out of fold, with TTA, the fold ensemble on test),
    each with its 95% lesion-level interval, and TTA's paired out-of-fold gain."""
    m = store.query("SELECT split, name, value FROM metrics WHERE run_id = ?", [cv_id])
    support = store.query("SELECT split, class, support FROM per_class WHERE run_id = ?", [cv_id])
    if m.empty:
        raise ModelError(f"no cross-validation summary {cv_id!r} in {store.path}")
    wide = m.pivot_table(index="split", columns="name", values="value", aggfunc="first")
    rows = []
    for split, label in CV_ROWS.items():
        if split not in wide.index:
            continue
        figures = wide.loc[split]
        counts = support[support["split"] == split].set_index("class")["support"]
        rows.append({"scoring": label, **{f: with_interval(figures, f) for f in CV_FIGURES},
                     "auc_macro_ovr": f"{figures['auc_macro_ovr']:.3f}",
                     "images": str(int(counts.sum())),
                     "mel/df/vasc": "/".join(str(int(counts.get(c, 0))) for c in ("mel", "df", "vasc"))})
    if "oof_tta_vs_oof" in wide.index:
        gain = wide.loc["oof_tta_vs_oof"]
        rows.append({"scoring": "TTA gain, paired (out of fold)",
                     **{f: with_interval(gain, f"delta_{f}") for f in CV_FIGURES}})
    return pd.DataFrame(rows).fillna("")
