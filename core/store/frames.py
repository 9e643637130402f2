"""Frames read from the results store: every variant with its figures and ratios, one run's detail, per-class
differences; plain pandas, shared by the dashboard, the report and the site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.classes import CLASSES
from core.compress.kinds import DENSE_FAMILY
from core.compress.modes import runtime_of_mode
from core.metrics import METRIC_NAMES
from core.store.results import ResultsStore

BASELINE_VARIANT = "dense-torch_fp32"


ONNX_BASELINE_VARIANT = "dense-fp32"  # the deployable baseline: the dense model exported to ONNX, fp32


METRIC_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "auc_macro_ovr": "ROC-AUC (macro)",
                 "kappa": "Cohen's kappa", "mcc": "MCC", "ece": "ECE"}


def variants_frame(store: ResultsStore, *, split: str = "test") -> pd.DataFrame:
    """One row per run with its ``split`` metrics, deploy figures (size, latency) and ratios vs the dense parent.

    Columns: run_id, parent_run_id, kind, model, variant, quantization, runtime, pruning_ratio, family (how the
    variant was made smaller: dense, pruned after training, pruned then trained, lower resolution, ...), dataset,
    dataset_fingerprint, split_hash, seed, git_sha, created_at, the metrics, size_mb, latency_ms, params, macs,
    size_x, speed_x, bal_acc_delta (the last three against the parent's dense PyTorch fp32 cell), size_x_onnx and
    speed_x_onnx (against the parent's dense fp32 ONNX cell, the deployable baseline), bal_acc_delta's paired 95%
    interval bal_acc_delta_ci_low / _high, and pooled_delta_* (the paired differences on val and test pooled).
    """
    runs = store.query("SELECT run_id, parent_run_id, kind, model, variant, dataset, dataset_fingerprint, split_hash, "
                       "seed, git_sha, created_at, json_extract_string(config, '$.mode') AS mode, "
                       "json_extract_string(config, '$.family') AS family FROM runs")
    if runs.empty:
        return runs
    metrics = store.query("SELECT run_id, split, name, value FROM metrics WHERE split IN (?, 'deploy')", [split])
    wide = metrics.pivot_table(index="run_id", columns="name", values="value", aggfunc="first")
    df = runs.merge(wide, left_on="run_id", right_index=True, how="inner")
    for col in (*METRIC_NAMES, "size_mb", "latency_b1_ms", "params", "macs", "pruning_ratio"):
        if col not in df.columns:
            df[col] = np.nan
    df = df.rename(columns={"latency_b1_ms": "latency_ms"})
    df["quantization"] = df["mode"].fillna("torch_fp32")
    df["runtime"] = df["quantization"].map(runtime_of_mode)  # which runtime runs the file (a key of modes.RUNTIMES)
    df["pruning_ratio"] = df["pruning_ratio"].fillna(0.0)
    df["family"] = df["family"].fillna(DENSE_FAMILY)  # training and evaluation runs: dense models
    df = df.drop(columns=["mode"])
    base = df[df["variant"] == BASELINE_VARIANT].set_index("parent_run_id")
    base = base[~base.index.duplicated()]
    parent = df["parent_run_id"]
    df["size_x"] = parent.map(base["size_mb"]) / df["size_mb"]
    df["speed_x"] = parent.map(base["latency_ms"]) / df["latency_ms"]
    df["bal_acc_delta"] = df["balanced_accuracy"] - parent.map(base["balanced_accuracy"])
    # Against what a deployment would actually run without this project: the dense model's fp32 ONNX export,
    # timed in the same sweep (PyTorch eager is 2-5x slower than it at batch 1 on these CPUs).
    onnx = df[df["variant"] == ONNX_BASELINE_VARIANT].set_index("parent_run_id")
    onnx = onnx[~onnx.index.duplicated()]
    df["size_x_onnx"] = parent.map(onnx["size_mb"]) / df["size_mb"]
    df["speed_x_onnx"] = parent.map(onnx["latency_ms"]) / df["latency_ms"]
    # The paired interval of that difference (same images, lesions resampled), where the cell stored one.
    for end in ("low", "high"):
        col = f"delta_balanced_accuracy_ci_{end}"
        df[f"bal_acc_delta_ci_{end}"] = df[col] if col in df.columns else np.nan
    pooled = store.query("SELECT run_id, name, value FROM metrics WHERE split = 'val_test'")
    if not pooled.empty:
        wide = pooled.pivot_table(index="run_id", columns="name", values="value", aggfunc="first")
        df = df.merge(wide.add_prefix("pooled_"), left_on="run_id", right_index=True, how="left")
    return df.sort_values(["model", "pruning_ratio", "variant"]).reset_index(drop=True)


def synthetic_share(df: pd.DataFrame) -> float:
    """Share of ``df``'s runs whose dataset is the synthetic demo set (its marker file, or a path naming it when the
    folder is not on this machine)."""
    from core.data.synthetic import is_synthetic_dataset

    if df.empty or "dataset" not in df.columns:
        return 0.0
    synthetic = {d for d in df["dataset"].dropna().unique()
                 if "synthetic" in str(d).lower() or is_synthetic_dataset(str(d))}
    return float(df["dataset"].isin(synthetic).mean())


@dataclass
class RunDetail:
    run: pd.Series
    metrics: pd.DataFrame
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    history: pd.DataFrame
    predictions: pd.DataFrame


def run_detail(store: ResultsStore, run_id: str) -> RunDetail:
    runs = store.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
    if runs.empty:
        raise KeyError(f"run {run_id} not found")
    q = lambda sql: store.query(sql, [run_id])  # noqa: E731
    preds = q("SELECT split, image_id, label, probs FROM predictions WHERE run_id = ?")
    return RunDetail(run=runs.iloc[0], metrics=q("SELECT split, name, value FROM metrics WHERE run_id = ?"),
                     per_class=q("SELECT * FROM per_class WHERE run_id = ?"),
                     confusion=q("SELECT * FROM confusion WHERE run_id = ?"),
                     history=q("SELECT epoch, name, value FROM history WHERE run_id = ? ORDER BY epoch"),
                     predictions=preds)


def confusion_matrix_frame(confusion: pd.DataFrame, split: str, *, normalize: bool = False) -> pd.DataFrame:
    """The confusion table of one split as a class x class matrix (rows: true), optionally row-normalized."""
    m = (confusion[confusion["split"] == split].pivot(index="true_class", columns="pred_class", values="count")
         .reindex(index=list(CLASSES), columns=list(CLASSES)).fillna(0))
    if normalize:
        m = m.div(m.sum(axis=1).replace(0, np.nan), axis=0).fillna(0)
    return m


def recall_deltas(store: ResultsStore, run_ids: list[str], *, split: str = "test") -> pd.DataFrame:
    """Per-class recall of each run minus that of its dense parent's baseline (class x run)."""
    if not run_ids:
        return pd.DataFrame()
    marks = ",".join("?" * len(run_ids))
    pc = store.query(f"""
        SELECT r.run_id, r.variant, p.class, p.recall,
               (SELECT b.recall FROM per_class b JOIN runs br ON b.run_id = br.run_id
                WHERE br.parent_run_id = r.parent_run_id AND br.variant = '{BASELINE_VARIANT}'
                  AND b.split = p.split AND b.class = p.class LIMIT 1) AS base_recall
        FROM runs r JOIN per_class p USING (run_id) WHERE r.run_id IN ({marks}) AND p.split = ?""",
                     [*run_ids, split])
    pc["delta"] = pc["recall"] - pc["base_recall"]
    return pc.pivot(index="class", columns="run_id", values="delta").reindex(list(CLASSES))


def class_support(store: ResultsStore, run_id: str, *, split: str = "test") -> pd.Series:
    """Number of images of each class in ``split`` as the run was scored (class -> count, CLASSES order)."""
    pc = store.query("SELECT class, support FROM per_class WHERE run_id = ? AND split = ?", [run_id, split])
    return pc.set_index("class")["support"].reindex(list(CLASSES))


def variant_card_paths(store: ResultsStore) -> pd.DataFrame:
    """run_id, variant, model and the card path (absolute) of every stored deployable variant."""
    return store.query("SELECT a.run_id, r.variant, r.model, a.path FROM artifacts a JOIN runs r USING (run_id) "
                       "WHERE a.kind = 'card' ORDER BY r.model, r.variant")
