"""The Trade-offs chart in Vega-Lite (Altair): a metric against size or latency, the Pareto frontier, both
baselines, the served and the recommended variant marked.

Vega-Lite, not Plotly, for the page people open first: Streamlit loads a 0.8 MB script for it against Plotly's
4.7 MB; in Chromium the chart is drawn about 1.1 s sooner on later visits, 0.3-0.8 s on first visits
(results/README.md section 24).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import altair as alt
import pandas as pd

from core.compress.modes import MODES
from core.store.choosing import pareto_front, ratio_text
from core.store.frames import METRIC_LABELS
from dashboard.charts import log_ticks

X_AXES = {"size_mb": "Model size (MB, log scale)", "latency_ms": "Latency (ms per image, batch 1)"}
# One shape per quantization mode whatever the filter, so a square always means the same thing (SVG paths where
# Vega has no named shape left).
_STAR = "M0,-1L0.24,-0.33L0.95,-0.31L0.38,0.12L0.59,0.81L0,0.4L-0.59,0.81L-0.38,0.12L-0.95,-0.31L-0.24,-0.33Z"
_HEXAGON = "M0,-1L0.87,-0.5L0.87,0.5L0,1L-0.87,0.5L-0.87,-0.5Z"
_PENTAGON = "M0,-1L0.95,-0.31L0.59,0.81L-0.59,0.81L-0.95,-0.31Z"
_BAR = "M-1,-0.45L1,-0.45L1,0.45L-1,0.45Z"
_SHAPES = ("circle", "square", "triangle-down", "diamond", "triangle-right", "triangle-left", "cross", _BAR, _STAR,
           "triangle-up", _HEXAGON, "wedge", _PENTAGON, "stroke", "arrow", "triangle")


def quant_shape(mode: str) -> str:
    """The mode's shape, by its place in the registry (modes past the last shape start again)."""
    return _SHAPES[list(MODES).index(mode) % len(_SHAPES)]


PLOT_HEIGHT = 420
SELECTION_POINTS, SELECTION_BOX = "pick", "box"  # the chart's selection parameters (Streamlit returns them by name)


@dataclass(frozen=True)
class Marked:
    """A variant drawn with a ring and a legend entry of its own."""

    label: str
    rows: pd.DataFrame
    shape: str
    colour: str


def _x_title(x: str, log_x: bool) -> str:
    title = X_AXES[x] if log_x else X_AXES[x].replace(", log scale", "")
    return f"{title} (log scale)" if x == "latency_ms" and log_x else title


def _x_encoding(deployable: pd.DataFrame, x: str, log_x: bool, field: str | None = None) -> alt.X:
    unit = "MB" if x == "size_mb" else "ms"
    if log_x:  # every tick labelled with its value and unit ("0.2 MB", never a bare "2")
        values, _ = log_ticks(deployable[x], unit)
        axis = alt.Axis(values=values, labelExpr=f"format(datum.value, '.3~g') + ' {unit}'", grid=True)
        scale = alt.Scale(type="log", domain=[min(values), max(values)] if values else alt.Undefined)
    else:
        axis, scale = alt.Axis(labelExpr=f"format(datum.value, '~g') + ' {unit}'"), alt.Scale(zero=False)
    return alt.X(field or x, type="quantitative", scale=scale, axis=axis, title=_x_title(x, log_x))


def _points_frame(drawn: pd.DataFrame, metric: str) -> pd.DataFrame:
    frame = drawn.copy()  # variants_frame names every row's family
    frame["series"] = frame["model"] + " · " + frame["family"]
    frame["size_text"] = frame["size_x"].map(lambda r: ratio_text(r, "smaller", "larger"))
    frame["speed_text"] = frame["speed_x"].map(lambda r: ratio_text(r, "faster", "slower"))
    frame["delta_text"] = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if pd.notna(lo) else f"{d:+.3f}"
                           for d, lo, hi in zip(frame["bal_acc_delta"], frame.get("bal_acc_delta_ci_low", pd.NA),
                                                frame.get("bal_acc_delta_ci_high", pd.NA), strict=False)]
    keep = ["run_id", "variant", "series", "quantization", "pruning_ratio", "family", "accuracy", "balanced_accuracy",
            "size_mb", "latency_ms", "size_text", "speed_text", "delta_text", metric,
            *[c for c in (f"{metric}_ci_low", f"{metric}_ci_high", "latency_b1_iqr_ms") if c in frame.columns]]
    return frame.loc[:, list(dict.fromkeys(keep))].reset_index(drop=True)


_TOOLTIP = [alt.Tooltip("variant", title="variant"), alt.Tooltip("series", title="architecture · family"),
            alt.Tooltip("balanced_accuracy", format=".3f", title="balanced accuracy"),
            alt.Tooltip("delta_text", title="Δ vs dense, paired 95% interval"),
            alt.Tooltip("accuracy", format=".3f"), alt.Tooltip("size_mb", format=".2f", title="size (MB)"),
            alt.Tooltip("size_text", title="size"), alt.Tooltip("latency_ms", format=".2f", title="latency (ms)"),
            alt.Tooltip("speed_text", title="speed"), alt.Tooltip("quantization"),
            alt.Tooltip("pruning_ratio", format=".2f", title="MACs or channels removed")]


def tradeoff_chart(drawn: pd.DataFrame, deployable: pd.DataFrame, *, x: str, metric: str, log_x: bool, split: str,
                   marked: list[Marked]) -> dict[str, Any]:
    """The Vega-Lite spec of the chart of ``drawn`` (the points worth drawing of ``deployable``, which sets the
    frontier and the axis), data inline."""
    points = _points_frame(drawn, metric)
    x_enc = _x_encoding(deployable, x, log_x)
    y_title = f"{METRIC_LABELS[metric]} ({split})"
    y_enc = alt.Y(metric, type="quantitative", scale=alt.Scale(zero=False), title=y_title)
    series = alt.Color("series:N", title="Architecture · family")
    base = alt.Chart(points)
    layers: list[alt.Chart] = []
    if f"{metric}_ci_low" in points.columns and points[f"{metric}_ci_low"].notna().any():  # 95% interval, lesions
        layers.append(base.mark_rule(strokeWidth=1).encode(x=x_enc, y=alt.Y(f"{metric}_ci_low:Q", title=y_title),
                                                            y2=f"{metric}_ci_high:Q", color=series))
    if x == "latency_ms" and "latency_b1_iqr_ms" in points.columns:  # ± half the interquartile range
        iqr = base.transform_calculate(lo="datum.latency_ms - datum.latency_b1_iqr_ms / 2",
                                       hi="datum.latency_ms + datum.latency_b1_iqr_ms / 2")
        layers.append(iqr.mark_rule(strokeWidth=1).encode(x=_x_encoding(deployable, x, log_x, "lo"), x2="hi:Q",
                                                          y=y_enc, color=series))
    pick = alt.selection_point(name=SELECTION_POINTS, fields=["run_id"], on="click")
    box = alt.selection_interval(name=SELECTION_BOX, encodings=["x", "y"])
    quant = sorted(deployable["quantization"].unique())
    ratios = sorted(float(r) for r in points["pruning_ratio"].dropna().unique())
    layers.append(base.mark_point(filled=True, opacity=0.85, stroke="#333", strokeWidth=1).encode(
        x=x_enc, y=y_enc, color=series,
        shape=alt.Shape("quantization:N", title="Quantization (symbol)",
                        scale=alt.Scale(domain=quant, range=[quant_shape(q) for q in quant])),
        size=alt.Size("pruning_ratio:Q", title="Pruning ratio (size)", scale=alt.Scale(domain=[0, 1], range=[90, 900]),
                      legend=alt.Legend(values=ratios) if len(ratios) > 1 else None),
        tooltip=_TOOLTIP).add_params(pick, box))
    front = pareto_front(deployable, x=x, y=metric)[[x, metric]].assign(line="Pareto frontier")
    layers.append(alt.Chart(front).mark_line(strokeDash=[3, 3], color="#555").encode(
        x=x_enc, y=y_enc, strokeDash=alt.StrokeDash("line:N", title=None)))
    layers.extend(_marked_layer(marked, x_enc, y_enc, x, metric))
    # Legends stacked below the plot, one column (beside it, or side by side, they squeezed a phone's plot).
    spec = (alt.layer(*layers).resolve_scale(shape="independent", strokeDash="independent")
            .properties(height=PLOT_HEIGHT, description=_description(points, x, metric, split, marked))
            .configure_legend(orient="bottom", direction="vertical", labelLimit=300, titleLimit=300, symbolLimit=40)
            .configure_axis(labelFontSize=12, titleFontSize=13)).to_dict()
    # Vega's legend layout (one column, not side by side) is not in Altair's Vega-Lite schema: set on the spec.
    spec["config"]["legend"]["layout"] = {"bottom": {"anchor": "start", "direction": "vertical", "margin": 10}}
    spec["autosize"] = {"type": "fit-x", "contains": "padding"}
    return spec


def _description(points: pd.DataFrame, x: str, metric: str, split: str, marked: list[Marked]) -> str:
    """What a screen reader says for the chart (the SVG's accessible name)."""
    rings = "; ".join(f"{m.label}: {', '.join(m.rows['variant'].astype(str))}" for m in marked if not m.rows.empty)
    return (f"Scatter chart of {len(points)} variants: {METRIC_LABELS[metric]} ({split}) against "
            f"{_x_title(x, False).lower()}, with the Pareto frontier. {rings}.")


def _marked_layer(marked: list[Marked], x_enc: alt.X, y_enc: alt.Y, x: str, metric: str) -> list[alt.Chart]:
    rows = [m.rows[[x, metric]].assign(marked=m.label) for m in marked if not m.rows.empty]
    if not rows:
        return []
    present = [m for m in marked if not m.rows.empty]
    labels = [m.label for m in present]
    return [alt.Chart(pd.concat(rows, ignore_index=True)).mark_point(filled=False, size=700, strokeWidth=3).encode(
        x=x_enc, y=y_enc,
        stroke=alt.Stroke("marked:N", title="Marked",
                          scale=alt.Scale(domain=labels, range=[m.colour for m in present])),
        shape=alt.Shape("marked:N", legend=None,
                        scale=alt.Scale(domain=labels, range=[m.shape for m in present])))]


def selected_run_ids(selection: dict[str, Any], points: pd.DataFrame, *, x: str, metric: str) -> list[str]:
    """The run ids a click (``pick``) or a dragged box (``box``: ranges of the two axes) selected."""
    ids = [p["run_id"] for p in selection.get(SELECTION_POINTS) or [] if isinstance(p, dict) and "run_id" in p]
    box = selection.get(SELECTION_BOX) or {}
    if x in box and metric in box:
        (x0, x1), (y0, y1) = sorted(box[x]), sorted(box[metric])
        inside = points[points[x].between(x0, x1) & points[metric].between(y0, y1)]
        ids += [i for i in inside["run_id"] if i not in ids]
    return ids
