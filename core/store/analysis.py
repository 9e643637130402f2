"""Queries and derived figures over the results store, for the dashboard and reports.

Everything here is plain pandas/numpy over :class:`core.store.results.ResultsStore`, so it is testable without
Streamlit and shared by every front end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.calibration import calibrated_softmax
from core.classes import CLASSES
from core.compress import runtime_of_mode
from core.errors import ModelError
from core.metrics import METRIC_NAMES
from core.store.results import ResultsStore

log = logging.getLogger(__name__)

BASELINE_VARIANT = "dense-torch_fp32"
ONNX_BASELINE_VARIANT = "dense-fp32"  # the deployable baseline: the dense model exported to ONNX, fp32
METRIC_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "auc_macro_ovr": "ROC-AUC (macro)",
                 "kappa": "Cohen's kappa", "mcc": "MCC", "ece": "ECE"}


def ratio_text(ratio: float, better: str, worse: str) -> str:
    """'2.0x smaller', or '1.1x larger' for a ratio below 1 (never '0.9x smaller')."""
    if ratio != ratio:  # NaN
        return "—"
    return f"{ratio:.1f}x {better}" if ratio >= 1 else f"{1 / ratio:.1f}x {worse}"


def _run_split(ref: str) -> tuple[str, list[str]]:
    """``run_id[:split[+split...]]``: a run and the splits whose predictions are pooled (default: test)."""
    run_id, _, splits = ref.partition(":")
    return run_id, (splits or "test").split("+")


def paired_comparison(store: ResultsStore, a: str, b: str, *, lesions_csv: str | Path) -> pd.DataFrame:
    """Figures of two stored runs' predictions (``run_id[:split]``, or splits pooled: ``run_id:val+test``) on the
    images both scored, and A - B paired over the same lesion draws: rows per metric, columns A, B, A - B with their
    95% intervals."""
    from core.errors import ConfigError
    from core.intervals import bootstrap_intervals, paired_differences

    frames = []
    for ref in (a, b):
        run_id, splits = _run_split(ref)
        part = store.query("SELECT image_id, label, probs FROM predictions "
                           "WHERE run_id = ? AND list_contains(?, split) ORDER BY image_id", [run_id, splits])
        if part.empty or part["image_id"].duplicated().any():
            raise ConfigError(f"no stored predictions for run {run_id!r} on split {'+'.join(splits)!r}"
                              if part.empty else f"{ref}: an image is in more than one of these splits")
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
    df["runtime"] = df["quantization"].map(runtime_of_mode)  # which runtime runs the file (core.compress.RUNTIMES)
    df["pruning_ratio"] = df["pruning_ratio"].fillna(0.0)
    df["family"] = df["family"].fillna("dense")  # training and evaluation runs: dense models (variants name theirs)
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


@dataclass(frozen=True)
class Filters:
    """The dashboard's shared sidebar filters; empty tuples mean "all"."""

    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    ratios: tuple[float, ...] = ()
    quantizations: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()


def apply_filters(df: pd.DataFrame, f: Filters) -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for col, wanted in (("dataset", f.datasets), ("model", f.models), ("pruning_ratio", f.ratios),
                        ("quantization", f.quantizations), ("runtime", f.runtimes)):
        if wanted:
            mask &= df[col].isin(wanted)
    return df[mask]


def pareto_front(df: pd.DataFrame, *, x: str, y: str, lower_y_better: bool = False) -> pd.DataFrame:
    """Rows not dominated by another: smaller ``x`` and better ``y`` (higher, or lower if ``lower_y_better``)."""
    d = df.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, lower_y_better])
    front, best = [], np.inf if lower_y_better else -np.inf
    for idx, value in d[y].items():
        if (value < best) if lower_y_better else (value > best):
            front.append(idx)
            best = value
    return d.loc[front]


def chart_points(df: pd.DataFrame, *, x: str, y: str, limit: int, keep: pd.Series | None = None) -> pd.DataFrame:
    """At most about ``limit`` rows worth drawing: all of ``df`` when it fits; otherwise the Pareto front, the rows
    ``keep`` marks (baselines, the served variant) and the best ``y`` of each architecture, family, quantization
    mode and pruning level, so no kind of variant disappears from the chart. A browser draws 10,000 SVG markers
    in seconds, and no one reads them."""
    if len(df) <= limit:
        return df
    config = [c for c in ("model", "family", "quantization", "pruning_ratio") if c in df.columns]
    best = df.dropna(subset=[y]).sort_values(y, ascending=False).drop_duplicates(config).head(limit)
    extra = [pareto_front(df, x=x, y=y)] + ([df[keep]] if keep is not None else [])
    return pd.concat([best, *extra]).loc[lambda d: ~d.index.duplicated()]


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """The variant to deploy under a budget, with what it costs and gains against its dense parent."""

    run_id: str
    variant: str
    model: str
    size_x: float
    speed_x: float
    bal_acc_delta: float  # balanced accuracy minus the dense parent's (negative: a loss)
    rule: str  # the rule that chose it, in words
    delta_low: float = float("nan")  # the paired 95% interval of bal_acc_delta, where stored
    delta_high: float = float("nan")
    balanced_accuracy: float = float("nan")
    mel_recall: float = float("nan")
    size_mb: float = float("nan")
    latency_ms: float = float("nan")
    latency_iqr_ms: float = float("nan")

    @property
    def headline(self) -> str:
        interval = (f" [{self.delta_low * 100:+.1f}, {self.delta_high * 100:+.1f}]"
                    if np.isfinite(self.delta_low) and np.isfinite(self.delta_high) else "")
        return (f"{self.variant}: {ratio_text(self.size_x, 'smaller', 'larger')}, "
                f"{ratio_text(self.speed_x, 'faster', 'slower')}, balanced accuracy "
                f"{self.bal_acc_delta * 100:+.1f} pts{interval}")

    @property
    def absolute(self) -> str:
        """The figures the ratios rest on, in one line."""
        return (f"balanced accuracy {self.balanced_accuracy:.3f}, melanoma recall {self.mel_recall:.3f}, "
                f"{self.size_mb:.2f} MB, {self.latency_ms:.2f} ms per image (IQR {self.latency_iqr_ms:.2f} ms)")

    @property
    def noisy_timing(self) -> bool:
        """Whether the latency's spread makes a speed ratio unreliable (IQR above half the median)."""
        return bool(np.isfinite(self.latency_iqr_ms) and self.latency_iqr_ms > NOISY_IQR_SHARE * self.latency_ms)


NOISY_IQR_SHARE = 0.5  # a timing whose interquartile range exceeds this share of its median is flagged


def recommend(df: pd.DataFrame, *, max_loss: float = 0.01, max_size_mb: float | None = None,
              max_latency_ms: float | None = None) -> Recommendation | None:
    """The variant to recommend among ``df``'s measured variants, or None if none fits.

    Without a size or latency budget: the smallest variant (then the fastest) that loses at most ``max_loss``
    balanced accuracy against its dense parent. With one: the best balanced accuracy within it (and the loss).
    """
    if max_loss < 0:
        raise ValueError(f"max_loss must be >= 0, got {max_loss}")
    cand = df[(df["kind"] == "variant") & df["size_x"].notna() & df["speed_x"].notna()
              & df["bal_acc_delta"].notna()]
    cand = cand[cand["bal_acc_delta"] >= -max_loss - 1e-12]
    budget = []
    if max_size_mb is not None:
        cand = cand[cand["size_mb"] <= max_size_mb]
        budget.append(f"at most {max_size_mb:g} MB")
    if max_latency_ms is not None:
        cand = cand[cand["latency_ms"] <= max_latency_ms]
        budget.append(f"at most {max_latency_ms:g} ms")
    if cand.empty:
        return None
    loss = f"losing at most {max_loss * 100:g} pts of balanced accuracy"
    if budget:
        best = cand.sort_values(["balanced_accuracy", "size_x"], ascending=False).iloc[0]
        rule = f"the best balanced accuracy with {' and '.join(budget)}, {loss}"
    else:
        best = cand.sort_values(["size_x", "speed_x"], ascending=False).iloc[0]
        rule = f"the smallest variant {loss} against its dense parent"
    figures = {field: float(best.get(column, np.nan)) for field, column in _RECOMMENDATION_COLUMNS.items()}
    return Recommendation(run_id=best["run_id"], variant=best["variant"], model=best["model"], rule=rule, **figures)


# Recommendation's figures and the variants-frame columns they come from.
_RECOMMENDATION_COLUMNS = {"size_x": "size_x", "speed_x": "speed_x", "bal_acc_delta": "bal_acc_delta",
                           "delta_low": "bal_acc_delta_ci_low", "delta_high": "bal_acc_delta_ci_high",
                           "balanced_accuracy": "balanced_accuracy", "mel_recall": "mel_recall",
                           "size_mb": "size_mb", "latency_ms": "latency_ms", "latency_iqr_ms": "latency_b1_iqr_ms"}


def no_fit_reason(df: pd.DataFrame, *, max_loss: float = 0.01, max_size_mb: float | None = None,
                  max_latency_ms: float | None = None) -> str:
    """Why :func:`recommend` found nothing: which limit excluded the variants that meet the other, and the closest
    variant (a sentence for the page that said "no variant fits")."""
    cand = df[(df["kind"] == "variant") & df["bal_acc_delta"].notna()]
    if cand.empty:
        return "No variant here has a measured difference against its dense parent."
    cand = cand[cand["size_x"].notna() & cand["speed_x"].notna()]
    if cand.empty:  # recommend ranks by the ratios: without the baseline's cell there are none
        return ("No variant here has size and speed ratios against the chosen baseline: its sweep has no cell of "
                "that baseline. Choose the other one in the sidebar (Ratios against).")
    within_loss = cand["bal_acc_delta"] >= -max_loss - 1e-12
    within_budget = pd.Series(True, index=cand.index)
    budget = []
    if max_size_mb is not None:
        within_budget &= cand["size_mb"] <= max_size_mb
        budget.append(f"{max_size_mb:g} MB")
    if max_latency_ms is not None:
        within_budget &= cand["latency_ms"] <= max_latency_ms
        budget.append(f"{max_latency_ms:g} ms")
    limit = f"the {max_loss * 100:g}-point loss limit"
    if within_budget.any():
        fits = cand[within_budget]
        closest = fits.loc[fits["bal_acc_delta"].idxmax()]
        where = f"fit {' and '.join(budget)}" if budget else "are shown"
        return (f"{len(fits)} variant(s) {where}, but {limit} excludes them all: "
                f"the closest, {closest['variant']} ({closest['size_mb']:.2f} MB, {closest['latency_ms']:.2f} ms), "
                f"loses {-closest['bal_acc_delta'] * 100:.1f} points.")
    pool = cand[within_loss] if within_loss.any() else cand
    closest = pool.sort_values(["size_mb", "latency_ms"]).iloc[0]
    return (f"No variant is within {' and '.join(budget)}"
            + (f" and {limit}" if within_loss.any() else "")
            + f": the smallest{' within the limit' if within_loss.any() else ''} is {closest['variant']} "
            f"({closest['size_mb']:.2f} MB, {closest['latency_ms']:.2f} ms, "
            f"{closest['bal_acc_delta'] * 100:+.1f} points).")


DEPLOYABLE_MODES = ("fp32", "static", "dynamic", "fp16", "qat")  # ONNX files (what the budget table compares)


def frontier_by_budget(test: pd.DataFrame, val: pd.DataFrame, *, step: float = 0.05) -> pd.DataFrame:
    """The Pareto table: for each MAC level (MACs kept, rounded to ``step``) and each way of getting there
    (family), the deployable cell with the best *validation* balanced accuracy, shown with its test figures.

    ``test`` and ``val``: :func:`variants_frame` (or the report's study frame) on those splits. Dense cells are at
    1.0; cells without a MAC count (per-layer ratios stored before MACs were kept) are left out.
    """
    cells = test[(test["kind"] == "variant") & test["quantization"].isin(DEPLOYABLE_MODES)].copy()
    if cells.empty:
        return cells
    kept = cells["macs_kept"] if "macs_kept" in cells.columns else pd.Series(np.nan, index=cells.index)
    cells["macs_kept"] = kept.where(cells["family"] != "dense", 1.0)
    cells = cells.dropna(subset=["macs_kept"])
    cells["macs_level"] = (cells["macs_kept"] / step).round() * step
    cells["val_balanced_accuracy"] = cells["run_id"].map(val.set_index("run_id")["balanced_accuracy"])
    best = (cells.sort_values("val_balanced_accuracy", ascending=False)
            .drop_duplicates(["parent_run_id", "macs_level", "family"]))
    return best.sort_values(["parent_run_id", "macs_level", "family"], ascending=[True, False, True]
                            ).reset_index(drop=True)


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
    has_predictions = not store.query("SELECT * FROM information_schema.tables WHERE table_name='predictions'").empty
    preds = (q("SELECT split, image_id, label, probs FROM predictions WHERE run_id = ?") if has_predictions
             else pd.DataFrame(columns=["split", "image_id", "label", "probs"]))
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


def roc_curves(labels: np.ndarray, probs: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One-vs-rest ROC curve (fpr, tpr) per class present with both outcomes."""
    from sklearn.metrics import roc_curve  # here: the pages without ROC curves load faster without sklearn

    curves = {}
    for i, c in enumerate(CLASSES):
        positives = labels == i
        if 0 < positives.sum() < len(labels):
            fpr, tpr, _ = roc_curve(positives, probs[:, i])
            curves[c] = (fpr, tpr)
    return curves


def group_roc(labels: np.ndarray, probs: np.ndarray, group: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC (fpr, tpr) and AUC of the summed probability of ``group`` against everything else (the screening
    question: possibly malignant or not); empty where the split lacks one of the two sides."""
    from sklearn.metrics import roc_curve

    from core.triage import group_probability

    positive = np.isin(labels, [CLASSES.index(c) for c in group])
    if positive.all() or not positive.any():
        return np.array([]), np.array([]), float("nan")
    score = group_probability(probs, group)
    fpr, tpr, _ = roc_curve(positive, score)
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def reliability(labels: np.ndarray, probs: np.ndarray, *, n_bins: int = 10) -> pd.DataFrame:
    """Reliability diagram data: per confidence bin, mean confidence, accuracy and count (top-label)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    rows = [{"bin": b, "confidence": conf[bins == b].mean(), "accuracy": correct[bins == b].mean(),
             "count": int((bins == b).sum())} for b in range(n_bins) if (bins == b).any()]
    return pd.DataFrame(rows)


def uncalibrated_probs(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The raw softmax behind stored calibrated probabilities: softmax(T * log p) = softmax(z) when
    p = softmax(z / T), so the reliability before calibration needs no second copy of the predictions."""
    return calibrated_softmax(temperature * np.log(np.clip(probs, 1e-12, 1.0)))


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


def short_names(df: pd.DataFrame) -> dict[str, str]:
    """run_id -> a short label, e.g. ``pruned-0.5-static (…c307)``, the tail of the training run it comes from (a
    trained run's own); the model is added where several are shown, the full run id where two labels would clash."""
    several = df["model"].nunique() > 1

    def label(r) -> str:
        source = r.parent_run_id if isinstance(r.parent_run_id, str) and r.parent_run_id else r.run_id
        return f"{r.model + ' ' if several else ''}{r.variant} (…{source.split('.')[0][-4:]})"

    names = {r.run_id: label(r) for r in df.itertuples()}
    clashes = pd.Series(names).duplicated(keep=False)
    return {run_id: f"{name} {run_id}" if clashes[run_id] else name for run_id, name in names.items()}


def variant_card_paths(store: ResultsStore) -> pd.DataFrame:
    """run_id, variant, model and the card path (resolved) of every stored deployable variant."""
    df = store.query("SELECT a.run_id, r.variant, r.model, a.path FROM artifacts a JOIN runs r USING (run_id) "
                     "WHERE a.kind = 'card' ORDER BY r.model, r.variant")
    df["path"] = df["path"].map(lambda p: str(store.resolve_artifact(p)))
    return df


@dataclass(frozen=True)
class DeployedChoice:
    """The variant the site serves by default, and why (said in the dashboard headline and the site's footer)."""

    folder: Path
    reason: str


def deployed_variant(store: ResultsStore) -> Path:
    """The folder of :func:`deployed_choice`."""
    return deployed_choice(store).folder


_CHOICE_METRICS = ("balanced_accuracy", "triage_malignant_sensitivity", "advice_mel_watch_share")


def deployed_choice(store: ResultsStore) -> DeployedChoice:
    """The variant to deploy by default: among the static int8 cells that keep the screening of their dense parent
    on validation — referral sensitivity not below the parent's interval (its ``dense-fp32`` cell), and no larger
    share of melanomas told "usually harmless" — the one with the best validation balanced accuracy (ties: the
    smaller file). Every static int8 cell competes, whatever its calibration. Chosen on validation, so the test
    figures stay an unbiased report. Where no cell keeps the screening, the one that misses the fewest melanomas.

    Raises:
        ModelError: no static int8 variant with validation figures whose files exist on this machine.
    """
    rows = store.query("""
        SELECT a.path, r.variant, r.parent_run_id, m.name, m.value, d.value AS size FROM runs r
        JOIN artifacts a USING (run_id) JOIN metrics m USING (run_id)
        LEFT JOIN metrics d ON d.run_id = r.run_id AND d.split = 'deploy' AND d.name = 'size_bytes'
        WHERE r.kind = 'variant' AND (regexp_matches(r.variant, '-static(-|$)') OR r.variant = 'dense-fp32')
          AND a.kind = 'card' AND m.split = 'val' AND list_contains(?, m.name)""",
                       [[*_CHOICE_METRICS, "triage_malignant_sensitivity_ci_low"]])
    frame = rows.pivot_table(index=["path", "variant", "parent_run_id"], columns="name", values="value",
                             aggfunc="first").reset_index()
    for name in (*_CHOICE_METRICS, "triage_malignant_sensitivity_ci_low"):  # figures a store may lack (tiny data)
        if name not in frame.columns:
            frame[name] = np.nan
    frame = frame.merge(rows.groupby("path")["size"].first().reset_index(), on="path")
    frame["path"] = frame["path"].map(store.resolve_artifact)
    frame = frame[frame["path"].map(Path.is_file).astype(bool)]
    static = frame[frame["variant"] != "dense-fp32"].sort_values(["balanced_accuracy", "size"],
                                                                 ascending=[False, True])
    if static.empty:
        raise ModelError("no static int8 variant with its files and validation figures in the results store; run a "
                         "sweep (python -m scripts.sweep) or name a variant folder")
    reference = frame[frame["variant"] == "dense-fp32"].set_index("parent_run_id")
    keeps = static.apply(lambda row: _keeps_screening(row, reference), axis=1).astype(bool)
    if keeps.any():
        pick = static[keeps].iloc[0]
        why = ("the best validation balanced accuracy ({:.3f}) among the int8 files that keep their dense model's "
               "screening (referral sensitivity {:.3f}; melanomas told 'usually harmless' {:.1%})")
    else:
        pick = static.sort_values(["advice_mel_watch_share", "balanced_accuracy"], ascending=[True, False]).iloc[0]
        why = ("no int8 file keeps its dense model's screening on validation: the one that tells the fewest melanomas "
               "'usually harmless' ({2:.1%}; balanced accuracy {0:.3f}, referral sensitivity {1:.3f})")
        log.warning("deployed variant: %s", why.format(*(pick.get(m, float("nan")) for m in _CHOICE_METRICS)))
    reason = why.format(*(pick.get(m, float("nan")) for m in _CHOICE_METRICS))
    return DeployedChoice(Path(pick["path"]).parent, reason)


def _keeps_screening(row: pd.Series, reference: pd.DataFrame) -> bool:
    """Whether a cell's validation screening is no worse than its dense parent's (no reference: judged alone)."""
    if row["parent_run_id"] not in reference.index:
        return True
    ref = reference.loc[row["parent_run_id"]]
    if isinstance(ref, pd.DataFrame):
        ref = ref.iloc[0]
    sensitivity_ok = not (row.get("triage_malignant_sensitivity", np.nan)
                          < ref.get("triage_malignant_sensitivity_ci_low", -np.inf))
    misses_ok = not (row.get("advice_mel_watch_share", np.nan) > ref.get("advice_mel_watch_share", np.inf) + 1e-9)
    return bool(sensitivity_ok and misses_ok)


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
