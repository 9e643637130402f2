"""The full-study report: every variant of every architecture in a results store, as Markdown tables and PNG plots.

Everything is read back from the store (what was measured is what is reported). Beside this project's figures it
sets the original study's claims, which came from a split that let images of one lesion fall on both sides.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core.compress.modes import RUNTIMES, mode_of
from core.provenance import git_sha
from core.store.choosing import frontier_by_budget, pareto_front
from core.store.frames import BASELINE_VARIANT, variants_frame
from core.store.results import ResultsStore
from core.store.summary import cv_summary

log = logging.getLogger(__name__)

# What the original write-up reported (for the side-by-side; not measured here).
ORIGINAL_CLAIMS = {
    "accuracy after dynamic quantization": "98.6% (images of one lesion on both sides of the split)",
    "size reduction": "6.5x smaller",
    "speed-up": "4x faster",
}

TABLE_COLUMNS = {"variant": "variant", "quantization": "quantization", "pruning_ratio": "pruning",
                 "accuracy": "accuracy", "balanced_accuracy": "bal. acc.", "recall_mel": "mel recall",
                 "bal_acc_delta": "Δ bal. acc.", "mel_delta": "Δ mel recall",
                 "triage_malignant_sensitivity": "referral sens.", "triage_malignant_specificity": "referral spec.",
                 "triage_melanoma_sensitivity": "mel referral sens.", "size_mb": "size MB",
                 "latency_ms": "latency ms", "latency_b1_iqr_ms": "IQR ms", "size_x_onnx": "smaller vs ONNX",
                 "speed_x_onnx": "faster vs ONNX", "size_x": "smaller vs eager", "speed_x": "faster vs eager"}


@dataclass(frozen=True)
class Report:
    markdown: Path
    plots: list[Path]


def _melanoma_recall(store: ResultsStore, split: str) -> pd.Series:
    pc = store.query("SELECT run_id, recall FROM per_class WHERE class = 'mel' AND split = ?", [split])
    return pc.set_index("run_id")["recall"]


def study_frame(store: ResultsStore, *, split: str = "test") -> pd.DataFrame:
    """Every measured variant with melanoma recall and its change against the dense parent."""
    df = variants_frame(store, split=split)
    if df.empty:
        return df
    df = df[df["kind"] == "variant"].copy()
    df["recall_mel"] = df["run_id"].map(_melanoma_recall(store, split))
    base = df[df["variant"] == BASELINE_VARIANT].drop_duplicates("parent_run_id").set_index("parent_run_id")
    df["mel_delta"] = df["recall_mel"] - df["parent_run_id"].map(base["recall_mel"])
    for column in ("latency_b1_iqr_ms", *TABLE_COLUMNS):  # stores written before a figure was measured
        if column not in df.columns:
            df[column] = float("nan")
    return df


def _fmt(value: object, column: str) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        if column in ("size_x", "speed_x", "size_x_onnx", "speed_x_onnx", "size_x_runtime", "speed_x_runtime"):
            return f"{value:.1f}x"
        if column in ("bal_acc_delta", "mel_delta", "pooled_delta_balanced_accuracy", "pooled_delta_mel_recall"):
            return f"{value * 100:+.1f} pts"
        if column in ("size_mb", "latency_ms", "latency_b1_iqr_ms", "pruning_ratio", "macs_level"):
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


FRONTIER_COLUMNS = {"macs_level": "MACs kept", "family": "family", "variant": "variant (best on val)",
                    "balanced_accuracy": "bal. acc.", "recall_mel": "mel recall",
                    "pooled_delta_balanced_accuracy": "Δ bal. acc. (val+test, paired)",
                    "pooled_delta_mel_recall": "Δ mel recall (val+test, paired)", "size_mb": "size MB",
                    "latency_ms": "latency ms", "size_x_onnx": "smaller vs ONNX", "speed_x_onnx": "faster vs ONNX",
                    "speed_x": "faster vs eager"}

# Columns shown with their 95% lesion-level bootstrap interval, and where that interval is stored.
INTERVAL_COLUMNS = {"balanced_accuracy": "balanced_accuracy_ci", "recall_mel": "mel_recall_ci",
                    "bal_acc_delta": "bal_acc_delta_ci",
                    "pooled_delta_balanced_accuracy": "pooled_delta_balanced_accuracy_ci",
                    "pooled_delta_mel_recall": "pooled_delta_mel_recall_ci",
                    **{f"triage_{k}": f"triage_{k}_ci" for k in ("malignant_sensitivity", "malignant_specificity",
                                                                 "melanoma_sensitivity")}}


def _cell(row: pd.Series, column: str) -> str:
    text = _fmt(row[column], column)
    ci = INTERVAL_COLUMNS.get(column)
    low, high = (row.get(f"{ci}_low"), row.get(f"{ci}_high")) if ci else (None, None)
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return text
    if column in ("bal_acc_delta", "pooled_delta_balanced_accuracy", "pooled_delta_mel_recall"):
        return f"{text} [{low * 100:+.1f}, {high * 100:+.1f}]"
    return f"{text} [{low:.3f}, {high:.3f}]"


def markdown_table(df: pd.DataFrame, columns: dict[str, str]) -> str:
    """A Markdown table; figures that carry a bootstrap interval are followed by it in brackets."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row, c) for c in columns) + " |" for _, row in df.iterrows()]
    return "\n".join(lines)


def pareto_plot(df: pd.DataFrame, *, x: str, title: str, path: Path) -> Path:
    """Balanced accuracy against ``x`` (log scale), one marker per quantization mode, the frontier dotted."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    modes = sorted(df["quantization"].unique())
    markers = dict(zip(modes, itertools.islice(itertools.cycle("osD^vPX*<>ph"), len(modes)), strict=True))
    if "balanced_accuracy_ci_low" in df.columns and df["balanced_accuracy_ci_low"].notna().any():
        ax.errorbar(df[x], df["balanced_accuracy"], fmt="none", ecolor="grey", elinewidth=0.8, alpha=0.6,
                    yerr=[df["balanced_accuracy"] - df["balanced_accuracy_ci_low"],
                          df["balanced_accuracy_ci_high"] - df["balanced_accuracy"]], label="95% interval (lesions)")
    for mode, part in df.groupby("quantization"):
        ax.scatter(part[x], part["balanced_accuracy"], s=30 + 120 * part["pruning_ratio"], marker=markers[mode],
                   label=mode, alpha=0.8, edgecolors="black", linewidths=0.5)
    front = pareto_front(df, x=x, y="balanced_accuracy")
    ax.plot(front[x], front["balanced_accuracy"], ":", color="grey", label="Pareto frontier")
    ax.set_xscale("log")
    ax.set_xlabel({"size_mb": "model size (MB, log)", "latency_ms": "latency (ms, batch 1, log)"}[x])
    ax.set_ylabel("balanced accuracy (test)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, title="quantization (marker size: pruning)", title_fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _side_by_side(df: pd.DataFrame) -> str:
    rows = []
    dq = df[df["quantization"] == "torch_dynamic"]
    static = df[df["quantization"] == "static"]
    dq_acc = (f"{dq['accuracy'].iloc[0] * 100:.1f}% accuracy, {dq['balanced_accuracy'].iloc[0] * 100:.1f}% balanced"
              f" ({dq['variant'].iloc[0]})" if not dq.empty else "not measured in this store")
    rows.append(("accuracy after dynamic quantization", ORIGINAL_CLAIMS["accuracy after dynamic quantization"],
                 dq_acc + "; lesion-grouped split"))
    if not static.empty:
        best = static.sort_values("size_x", ascending=False).iloc[0]
        rows.append(("size reduction", ORIGINAL_CLAIMS["size reduction"],
                     f"{best['size_x']:.1f}x ({best['variant']}, balanced accuracy "
                     f"{best['bal_acc_delta'] * 100:+.1f} pts)"))
        fastest = static.sort_values("speed_x", ascending=False).iloc[0]
        rows.append(("speed-up", ORIGINAL_CLAIMS["speed-up"],
                     f"{fastest['speed_x']:.1f}x at batch 1 vs PyTorch eager ({fastest['variant']})"))
    if not dq.empty:
        rows.append(("what dynamic quantization does to a CNN", "—",
                     f"{dq['size_x'].iloc[0]:.2f}x smaller, {dq['speed_x'].iloc[0]:.2f}x faster: PyTorch dynamic "
                     "quantization touches only Linear layers"))
    lines = ["| claim | original study | measured here |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


RUNTIME_COLUMNS = {"runtime": "runtime", "variant": "variant", "quantization": "mode",
                   "export_top1_agreement": "agrees with source (val)", "balanced_accuracy": "bal. acc.",
                   "recall_mel": "mel recall", "bal_acc_delta": "Δ bal. acc.", "size_mb": "size MB",
                   "latency_ms": "latency ms", "latency_b1_iqr_ms": "IQR ms", "size_x_runtime": "smaller vs its fp32",
                   "speed_x_runtime": "faster vs its fp32", "size_x_onnx": "smaller vs ONNX",
                   "speed_x_onnx": "faster vs ONNX"}


def runtime_table(part: pd.DataFrame) -> pd.DataFrame:
    """One parent's cells of every runtime, each beside the same runtime's dense fp32 file (size and speed ratios
    against it): "which file do I ship with this runtime?"."""
    part = part.copy()
    dense_fp32 = {"onnxruntime": "dense-fp32", "pytorch": BASELINE_VARIANT}
    for runtime in part["runtime"].dropna().unique():
        name = dense_fp32.get(runtime) or next(
            (v for v in part.loc[part["runtime"] == runtime, "variant"] if v.startswith("dense-")
             and v.endswith("_fp32")), None)
        base = part[part["variant"] == name]
        mask = part["runtime"] == runtime
        part.loc[mask, "size_x_runtime"] = base["size_mb"].iloc[0] / part.loc[mask, "size_mb"] if len(base) else None
        part.loc[mask, "speed_x_runtime"] = (base["latency_ms"].iloc[0] / part.loc[mask, "latency_ms"]
                                             if len(base) else None)
    for column in RUNTIME_COLUMNS:
        if column not in part.columns:
            part[column] = float("nan")
    return part.sort_values(["runtime", "pruning_ratio", "variant"])


def _phone_runtimes(df: pd.DataFrame) -> list[str]:
    """A table per parent that has phone-format cells (.ort, .pte, .tflite), grouped by runtime."""
    sections = []
    for parent, part in df.groupby("parent_run_id", sort=True):
        if not part["quantization"].map(lambda m: mode_of(m).phone).any():
            continue
        table = runtime_table(part).replace({"runtime": RUNTIMES})
        sections.append(f"## Per runtime (dense run `{parent}`)\n\nEach file run back by its own runtime on this "
                        "x86 CPU at 2 threads (an x86 proxy: phones differ); 'agrees with source' is the share of "
                        "validation images on which it gives its source's top-1 class (fp32 files below 99% are "
                        "not kept). Ratios against the same runtime's dense fp32 file, and against dense fp32 ONNX "
                        "Runtime.\n\n" + markdown_table(table, RUNTIME_COLUMNS))
    return sections


def _cross_validations(store: ResultsStore) -> list[str]:
    """A section per stored cross-validation summary: out-of-fold figures with intervals, the fold ensemble."""
    runs = store.query("SELECT run_id, model, created_at FROM runs WHERE kind = 'cv' ORDER BY created_at")
    sections = []
    for run in runs.itertuples():
        table = cv_summary(store, run.run_id)
        lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
        sections.append(f"## Cross-validation `{run.run_id}` ({run.model})\n\nLesion-grouped folds over train + val; "
                        "every image scored once by the fold model that did not train on it (out of fold). The "
                        "fold ensemble has no out-of-fold score: it is scored on the fixed test split.\n\n"
                        + "\n".join(lines))
    return sections


def write_report(store: ResultsStore, out_dir: str | Path, *, split: str = "test") -> Report:
    """``REPORT.md`` and its PNG plots (``report-plots/``) in ``out_dir`` from every variant in the store."""
    out_dir = Path(out_dir)
    df = study_frame(store, split=split)
    if df.empty:
        raise ValueError(f"{store.path}: no measured variants to report (run a sweep first)")
    plots: list[Path] = []
    parts = [f"# LesionLite full-study report\n\nGenerated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by "
             f"`python -m scripts.report --db {store.path}` at git `{git_sha()[:12]}`; {len(df)} variants of "
             f"{df['parent_run_id'].nunique()} dense run(s). Accuracy figures are on the **{split}** split; size is "
             "the deployable file; latency is the median at batch 1 on the machine that ran each sweep (IQR beside "
             "it); "
             "ratios are against the dense model's fp32 ONNX export (what a deployment runs without this project) "
             "and against PyTorch eager, and Δ against the dense PyTorch FP32 cell of the same parent, all measured "
             "in the same sweep. "
             "Brackets hold 95% bootstrap intervals that resample lesions (images of one lesion move together); "
             "the Δ interval is paired (the variant and its parent on the same resampled lesions): a Δ whose "
             "interval includes zero is not a measured difference. Referral sensitivity / specificity are the "
             "screening operating point's (a threshold on the possibly-malignant, or melanoma, probability fitted "
             "on validation for 0.90 / 0.85 sensitivity there) on this split.",
             "## Against the original study\n\n" + _side_by_side(df) +
             "\n\nThe original figure came from a split that put images of the same lesion in training and test; "
             "here every split is grouped by `lesion_id`, and balanced accuracy (mean per-class recall) and melanoma "
             "recall are reported beside accuracy because nv is 67% of the images."]
    for (model, parent), part in df.groupby(["model", "parent_run_id"], sort=True):
        part = part.sort_values(["pruning_ratio", "quantization", "variant"])
        stem = f"{model}-{str(parent)[-4:]}"
        sizes = pareto_plot(part, x="size_mb", title=f"{model}: balanced accuracy vs size",
                            path=out_dir / "report-plots" / f"{stem}-size.png")
        speed = pareto_plot(part, x="latency_ms", title=f"{model}: balanced accuracy vs latency",
                            path=out_dir / "report-plots" / f"{stem}-latency.png")
        plots += [sizes, speed]
        mel = part.dropna(subset=["mel_delta"]).sort_values("mel_delta")
        worst = (f"Melanoma recall falls most in `{mel.iloc[0]['variant']}` ({mel.iloc[0]['mel_delta'] * 100:+.1f} "
                 "pts against the dense model)." if not mel.empty and mel.iloc[0]["mel_delta"] < 0 else
                 "No variant loses melanoma recall against the dense model.")
        parts.append(f"## {model} (dense run `{parent}`)\n\n{markdown_table(part, TABLE_COLUMNS)}\n\n{worst}\n\n"
                     f"![{model} size]({sizes.relative_to(out_dir)}) ![{model} latency]({speed.relative_to(out_dir)})")
    frontier = frontier_by_budget(df, study_frame(store, split="val"))
    for parent, part in frontier.groupby("parent_run_id", sort=True):
        if part["family"].nunique() > 1:
            parts.append(f"## Frontier by MAC budget (dense run `{parent}`)\n\nFor each share of the dense MACs "
                         "and each way of getting there, the ONNX cell with the best validation balanced accuracy; "
                         "figures on the test split, Δ paired against the dense parent on validation and test "
                         "pooled.\n\n" + markdown_table(part, FRONTIER_COLUMNS))
    parts += _phone_runtimes(df)
    parts += _cross_validations(store)
    path = out_dir / "REPORT.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(parts) + "\n")
    log.info("report: %s (%d plots)", path, len(plots))
    return Report(path, plots)
