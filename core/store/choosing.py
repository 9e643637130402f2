"""Choosing a variant: the Pareto front, the recommendation under a budget (and why none fits), the frontier at
equal MACs, and the variant the site serves by default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.compress.kinds import DENSE_FAMILY
from core.compress.modes import MODES
from core.errors import ModelError
from core.store.results import ResultsStore

log = logging.getLogger(__name__)

def ratio_text(ratio: float, better: str, worse: str) -> str:
    """'2.0x smaller', or '1.1x larger' for a ratio below 1 (never '0.9x smaller')."""
    if ratio != ratio:  # NaN
        return "—"
    return f"{ratio:.1f}x {better}" if ratio >= 1 else f"{1 / ratio:.1f}x {worse}"


def pareto_front(df: pd.DataFrame, *, x: str, y: str, lower_y_better: bool = False) -> pd.DataFrame:
    """Rows not dominated by another: smaller ``x`` and better ``y`` (higher, or lower if ``lower_y_better``)."""
    d = df.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, lower_y_better])
    front, best = [], np.inf if lower_y_better else -np.inf
    for idx, value in d[y].items():
        if (value < best) if lower_y_better else (value > best):
            front.append(idx)
            best = value
    return d.loc[front]


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


def frontier_by_budget(test: pd.DataFrame, val: pd.DataFrame, *, step: float = 0.05) -> pd.DataFrame:
    """The Pareto table: for each MAC level (MACs kept, rounded to ``step``) and each way of getting there
    (family), the deployable cell with the best *validation* balanced accuracy, shown with its test figures.

    ``test`` and ``val``: :func:`variants_frame` (or the report's study frame) on those splits. Dense cells are at
    1.0; cells without a MAC count (per-layer ratios stored before MACs were kept) are left out.
    """
    deployable = [m.name for m in MODES.values() if m.deployable]  # ONNX files (what the budget table compares)
    cells = test[(test["kind"] == "variant") & test["quantization"].isin(deployable)].copy()
    if cells.empty:
        return cells
    kept = cells["macs_kept"] if "macs_kept" in cells.columns else pd.Series(np.nan, index=cells.index)
    cells["macs_kept"] = kept.where(cells["family"] != DENSE_FAMILY, 1.0)
    cells = cells.dropna(subset=["macs_kept"])
    cells["macs_level"] = (cells["macs_kept"] / step).round() * step
    cells["val_balanced_accuracy"] = cells["run_id"].map(val.set_index("run_id")["balanced_accuracy"])
    best = (cells.sort_values("val_balanced_accuracy", ascending=False)
            .drop_duplicates(["parent_run_id", "macs_level", "family"]))
    return best.sort_values(["parent_run_id", "macs_level", "family"], ascending=[True, False, True]
                            ).reset_index(drop=True)


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
    """The variant to deploy by default. The recipe's own deployable model first: the dense static int8 cell of the
    newest model refit on train + val after a cross-validation (``scripts.train_final --no-distill``; it has no
    validation split, so it is chosen by this rule, never on its test figures). Otherwise, among the static int8
    cells that keep the screening of their dense parent on validation — referral sensitivity not below the parent's
    interval (its ``dense-fp32`` cell), and no larger share of melanomas told "usually harmless" — the one with the
    best validation balanced accuracy (ties: the smaller file). Every static int8 cell competes, whatever its
    calibration. Chosen on validation, so the test figures stay an unbiased report. Where no cell keeps the
    screening, the one that misses the fewest melanomas.

    Raises:
        ModelError: no static int8 variant with validation figures whose files exist on this machine.
    """
    refit = _refit_choice(store)
    if refit is not None:
        return refit
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
    frame["path"] = frame["path"].map(Path)
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


def _refit_choice(store: ResultsStore) -> DeployedChoice | None:
    """The dense static int8 cell of the newest refit model (parent variant ``final``) whose files are here."""
    rows = store.query("""
        SELECT a.path, p.run_id AS parent FROM runs r JOIN runs p ON p.run_id = r.parent_run_id
        JOIN artifacts a ON a.run_id = r.run_id
        WHERE r.kind = 'variant' AND r.variant = 'dense-static' AND p.variant = 'final' AND a.kind = 'card'
        ORDER BY p.created_at DESC""")
    for row in rows.itertuples():
        if Path(row.path).is_file():
            return DeployedChoice(Path(row.path).parent, f"the recipe's model refit on train + val ({row.parent}), "
                                  "static int8; its calibration and operating points fitted on its "
                                  "cross-validation's out-of-fold predictions")
    return None


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
