"""Chart helpers shared by the pages."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go


def wrap_title(text: str, width: int = 38) -> str:
    """A chart title broken into lines of about ``width`` characters (plotly never wraps; a phone cut it)."""
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join([*lines, line]) if line else "<br>".join(lines)


def phone_friendly(fig: go.Figure, *, plot_height: int = 380, legend_rows: int | None = None) -> go.Figure:
    """Lay a chart out so that it reads on a 390-px phone as on a desktop: the legend below the plot (never beside
    it, where it squeezed the plot to ~60 px), the title wrapped, and the figure tall enough that the plot keeps
    ``plot_height`` pixels under a legend of one entry per row (the phone's case)."""
    title = fig.layout.title.text
    entries = legend_rows if legend_rows is not None else sum(
        1 for t in fig.data if t.showlegend is not False and t.name)
    title_lines = wrap_title(title).count("<br>") + 1 if title else 0
    top = 30 + 18 * title_lines
    legend = 22 * entries + (24 if fig.layout.legend.title.text else 0)
    fig.update_layout(
        height=plot_height + top + legend + 70,
        margin={"l": 10, "r": 10, "t": top, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.12, "xanchor": "left", "x": 0,
                "title": {"side": "top"}},
        **({"title": {"text": wrap_title(title), "font": {"size": 14}}} if title else {}),
    )
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def log_ticks(values, unit: str) -> tuple[list[float], list[str]]:
    """Tick positions on a 1-2-5 sequence covering ``values`` and labels that carry their value and unit
    ("0.2 MB", "2 MB", "10 ms"): plotly's own log ticks print "2" for both 0.2 and 2."""
    finite = [float(v) for v in values if v is not None and v == v and float(v) > 0]
    if not finite:
        return [], []
    low, high = min(finite), max(finite)
    ticks: list[float] = []
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 7)):  # finer where the range spans less than a decade
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
                 for m in mantissas if low / 1.5 <= m * 10.0 ** e <= high * 1.5]
        if len(ticks) >= 4:
            break
    if len(ticks) < 2:  # a very narrow range: its ends
        ticks = sorted({low, high})
    return ticks, [f"{t:.3g} {unit}" for t in ticks]


def cam_figure(crop: np.ndarray, cam: np.ndarray | None, *, title: str, colorbar: bool = False) -> go.Figure:
    """The crop the model saw, with (``cam`` given) its Grad-CAM drawn over it at the same pixels in a jet scale;
    ``colorbar`` adds the scale's legend."""
    fig = go.Figure(go.Image(z=crop, hoverinfo="skip"))
    if cam is not None:
        fig.add_trace(go.Heatmap(z=cam, zmin=0, zmax=1, colorscale="Jet", opacity=0.5, showscale=colorbar,
                                 hovertemplate="influence %{z:.2f}<extra></extra>",
                                 colorbar={"title": {"text": "influence on<br>the prediction", "side": "right"},
                                           "tickvals": [0, 0.5, 1], "ticktext": ["none", "half", "strongest"],
                                           "thickness": 12}))
    fig.update_layout(title={"text": title, "font": {"size": 13}}, margin={"l": 0, "r": 0, "t": 30, "b": 0},
                      height=300, xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"})
    return fig
