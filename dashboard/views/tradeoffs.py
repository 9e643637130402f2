"""Trade-offs: which variant, at what cost — a headline recommendation, then a metric against size or latency with
the Pareto frontier and the dense baselines."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.compress import QUANT_MODES, RUNTIMES
from core.errors import ModelError
from core.store.analysis import (
    BASELINE_VARIANT,
    METRIC_LABELS,
    DeployedChoice,
    chart_points,
    deployed_choice,
    no_fit_reason,
    pareto_front,
    ratio_text,
    recommend,
)
from dashboard.charts import log_ticks, phone_friendly
from dashboard.state import BASELINE_VARIANTS, BASELINES, all_variants, baseline, filtered_variants, reader, remembered

# One symbol per quantization mode whatever the filter, so a square always means the same thing.
QUANT_SYMBOLS = dict(zip(QUANT_MODES, ["circle", "diamond", "x", "square", "triangle-up", "cross", "hexagon",
                                       "circle-open", "square-open", "pentagon", "pentagon-open", "star-triangle-up",
                                       "star-triangle-up-open"], strict=True))
X_AXES = {"size_mb": "Model size (MB, log scale)", "latency_ms": "Latency (ms per image, batch 1)"}
# What "x smaller / x faster" is measured against: the dense model's fp32 ONNX export is what a deployment would
# run anyway; PyTorch eager is 2-5x slower at batch 1 and flatters every variant.
# Above this many variants the chart draws a summary (see chart_points) unless asked for every point.
CHART_LIMIT = 1500
ANY_RUNTIME = "any"



def deployed() -> DeployedChoice | None:
    """The variant the site serves by default from this store and why (None where it has no deployable cell)."""
    try:
        with reader() as store:
            return deployed_choice(store)
    except ModelError:
        return None


def deployed_folder() -> Path | None:
    choice = deployed()
    return choice.folder if choice else None


st.title("Accuracy / size / latency trade-offs")
ss = st.session_state
for key, default in (("to_metric", "balanced_accuracy"), ("to_x", "size_mb"), ("to_log", True), ("to_loss", 1.0),
                     ("to_size", None), ("to_latency", None), ("to_runtime", ANY_RUNTIME)):
    ss.setdefault(key, remembered(key, default))
df = filtered_variants()
deployable = df[df["kind"] == "variant"].dropna(subset=["size_mb", "latency_ms"])
split = ss.get("f_split", "test")
if split != "test" and deployable["balanced_accuracy"].isna().all() and not deployable.empty:
    st.warning(f"No variant in this store was scored on the {split} split (sweeps before validation scoring "
               "stored test figures only): showing test.")
    split = "test"
    deployable = all_variants("test").pipe(lambda d: d[d["run_id"].isin(deployable["run_id"])])
deployable = deployable.dropna(subset=["balanced_accuracy"])
base_choice = baseline()

if deployable.empty:
    st.info("No measured variants match the filters. Run a sweep (`python -m scripts.sweep -c ...`) "
            "or clear the filters in the sidebar.")
    st.stop()

with st.container(border=True):
    b1, b2, b3, b4 = st.columns(4)
    loss = b1.number_input("Allowed balanced-accuracy loss (pts)", min_value=0.0, max_value=50.0, step=0.5,
                           key="to_loss", help="against each variant's own dense PyTorch FP32 parent")
    size_budget = b2.number_input("Size budget (MB, optional)", min_value=0.0, key="to_size")
    latency_budget = b3.number_input("Latency budget (ms, optional)", min_value=0.0, key="to_latency")
    runtimes = [ANY_RUNTIME, *sorted(deployable["runtime"].dropna().unique())]
    if ss["to_runtime"] not in runtimes:  # a shared link naming a runtime this store has no variant for
        ss["to_runtime"] = ANY_RUNTIME
    runtime = b4.selectbox("Runtime", runtimes, key="to_runtime",
                           format_func=lambda r: "any runtime" if r == ANY_RUNTIME else RUNTIMES.get(r, r),
                           help="recommend a file for this runtime (phone runtimes timed here as an x86 proxy)")
    candidates = deployable if runtime == ANY_RUNTIME else deployable[deployable["runtime"] == runtime]
    pick = recommend(candidates, max_loss=loss / 100, max_size_mb=size_budget, max_latency_ms=latency_budget)
    if pick is None:
        st.header("No variant fits this budget")
        st.caption(no_fit_reason(candidates, max_loss=loss / 100, max_size_mb=size_budget,
                                 max_latency_ms=latency_budget) + " Allow a larger loss or a larger budget.")
    else:
        st.header(f"Recommended: {pick.headline}", anchor="recommended")
        reference = deployable[(deployable["variant"] == BASELINE_VARIANTS[base_choice])
                               & (deployable["parent_run_id"] == deployable.set_index("run_id").loc[
                                   pick.run_id, "parent_run_id"])]
        against = (f" ({reference['size_mb'].iloc[0]:.2f} MB, {reference['latency_ms'].iloc[0]:.2f} ms)"
                   if not reference.empty else "")
        st.markdown(f"**{pick.absolute}** ({split} split). Ratios against the {BASELINES[base_choice]} model of the "
                    f"same sweep{against}; Δ against its dense PyTorch FP32 parent, paired.")
        if pick.noisy_timing:
            st.warning(f"Noisy timing: the latency's interquartile range ({pick.latency_iqr_ms:.2f} ms) is more than "
                       f"half its median ({pick.latency_ms:.2f} ms), so "
                       f"'{ratio_text(pick.speed_x, 'faster', 'slower')}' is unreliable. "
                       "Re-time alone: `python -m scripts.bench_variants --variants <folder>`.")
        serving = deployed()
        st.caption(f"{pick.model}, run `{pick.run_id}`: {pick.rule}; among the variants the filters show. "
                   + (f"The site serves `{serving.folder.name}` by default, chosen for {serving.reason} (ringed on "
                      "the chart)." if serving else ""))

c1, c2, c3 = st.columns([2, 2, 1])
metric = c1.selectbox("Metric", [m for m in METRIC_LABELS if m != "ece"], format_func=METRIC_LABELS.get,
                      key="to_metric")
x = c2.selectbox("Against", list(X_AXES), key="to_x",
                 format_func={"size_mb": "Model size (MB)", "latency_ms": "Latency (ms / image, batch 1)"}.get)
log_x = c3.toggle("Log scale", key="to_log")

served = deployed_folder()
is_served = ((deployable["variant"] == served.name) & (deployable["parent_run_id"] == served.parent.name)
             if served is not None else pd.Series(False, index=deployable.index))
drawn = deployable
if len(deployable) > CHART_LIMIT and not st.toggle(f"Draw all {len(deployable):,} variants (slow)", key="to_all"):
    drawn = chart_points(deployable, x=x, y=metric, limit=CHART_LIMIT,
                         keep=is_served | (deployable["variant"] == BASELINE_VARIANT))
    st.caption(f"The chart shows {len(drawn):,} of the {len(deployable):,} variants: the Pareto frontier, the "
               "baselines, the served variant and the best of each architecture, family, quantization mode and "
               "pruning level. Narrow the filters in the sidebar, or draw all of them.")
fig = go.Figure()
iqr = drawn.get("latency_b1_iqr_ms")
families = drawn["family"] if "family" in drawn.columns else pd.Series("dense", index=drawn.index)
for (model, family), part in drawn.assign(family=families).groupby(["model", "family"]):
    error = ({"type": "data", "array": part["latency_b1_iqr_ms"] / 2, "visible": True, "thickness": 1}
             if x == "latency_ms" and iqr is not None else None)
    interval = None
    if f"{metric}_ci_low" in part.columns and part[f"{metric}_ci_low"].notna().any():
        interval = {"type": "data", "symmetric": False, "thickness": 1, "visible": True,
                    "array": part[f"{metric}_ci_high"] - part[metric],
                    "arrayminus": part[metric] - part[f"{metric}_ci_low"]}
    fig.add_trace(go.Scatter(
        x=part[x], y=part[metric], mode="markers", name=f"{model} · {family}", error_x=error, error_y=interval,
        marker={"size": 9 + 22 * part["pruning_ratio"], "symbol": [QUANT_SYMBOLS.get(q, "star") for q in
                                                                   part["quantization"]],
                "line": {"width": 1, "color": "#333"}},
        customdata=part.assign(size_text=part["size_x"].map(lambda r: ratio_text(r, "smaller", "larger")),
                               speed_text=part["speed_x"].map(lambda r: ratio_text(r, "faster", "slower")))[
            ["run_id", "variant", "accuracy", "balanced_accuracy", "size_mb", "latency_ms", "bal_acc_delta",
             "size_text", "speed_text", "pruning_ratio", "quantization", "bal_acc_delta_ci_low",
             "bal_acc_delta_ci_high", "family"]].to_numpy(),
        hovertemplate=("<b>%{customdata[1]}</b><br>balanced accuracy %{customdata[3]:.3f} "
                       "(Δ %{customdata[6]:+.3f} vs dense, paired 95% interval [%{customdata[11]:+.3f}, "
                       "%{customdata[12]:+.3f}])<br>accuracy %{customdata[2]:.3f}<br>"
                       "size %{customdata[4]:.2f} MB (%{customdata[7]})<br>"
                       "latency %{customdata[5]:.2f} ms (%{customdata[8]})<br>"
                       "%{customdata[13]}: %{customdata[9]:.2f} of the MACs or channels removed, "
                       "%{customdata[10]}<extra>%{fullData.name}</extra>"),
    ))
for mode in sorted(deployable["quantization"].unique()):  # legend entries: what each symbol means
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"quantization: {mode}", legendgroup="q",
                             marker={"symbol": QUANT_SYMBOLS.get(mode, "star"), "size": 10, "color": "#888"}))
for ratio in sorted(deployable["pruning_ratio"].unique()):  # legend entries: what each marker size means
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"pruning ratio {ratio:g}", legendgroup="p",
                             marker={"symbol": "circle-open", "size": 9 + 22 * ratio, "color": "#888"}))
front = pareto_front(deployable, x=x, y=metric)
fig.add_trace(go.Scatter(x=front[x], y=front[metric], mode="lines", name="Pareto frontier",
                         line={"dash": "dot", "color": "#555"}, hoverinfo="skip"))
if served is not None:
    on_site = deployable[is_served]
    fig.add_trace(go.Scatter(x=on_site[x], y=on_site[metric], mode="markers", name="served by the site (default)",
                             marker={"symbol": "circle-open", "size": 28, "line": {"width": 3, "color": "#c0392b"}},
                             hoverinfo="skip"))
if pick is not None:  # the headline's variant, marked as consistently as the served one
    chosen = deployable[deployable["run_id"] == pick.run_id]
    fig.add_trace(go.Scatter(x=chosen[x], y=chosen[metric], mode="markers", name="recommended (the headline)",
                             marker={"symbol": "diamond-open", "size": 30, "line": {"width": 3, "color": "#1f3a5f"}},
                             hoverinfo="skip"))
for key, symbol in (("eager", "star"), ("onnx", "star-diamond")):  # both baselines, the chosen one said so
    base = deployable[deployable["variant"] == BASELINE_VARIANTS[key]]
    fig.add_trace(go.Scatter(
        x=base[x], y=base[metric], mode="markers", hoverinfo="skip",
        name=f"baseline: {BASELINES[key]}" + (" (ratios against this)" if key == base_choice else ""),
        marker={"symbol": symbol, "size": 18, "color": "gold" if key == base_choice else "#bbb",
                "line": {"width": 1, "color": "#000"}}))
x_title = X_AXES[x] if log_x else X_AXES[x].replace(", log scale", "")
if x == "latency_ms" and log_x:
    x_title += " (log scale)"
fig.update_layout(xaxis_title=x_title, yaxis_title=f"{METRIC_LABELS[metric]} ({split})",
                  dragmode="select",  # dragging selects points (zoom stays in the toolbar)
                  legend_title="Architecture · family (colour), quantization (symbol), pruning (size)")
phone_friendly(fig, plot_height=420)
unit = "MB" if x == "size_mb" else "ms"
if log_x:  # every tick labelled with its value and unit (plotly's log ticks read "2" for 0.2 and for 2)
    tickvals, ticktext = log_ticks(deployable[x], unit)
    fig.update_xaxes(type="log", tickmode="array", tickvals=tickvals, ticktext=ticktext)
else:
    fig.update_xaxes(type="linear", ticksuffix=f" {unit}")
event = st.plotly_chart(fig, key="tradeoff_chart", on_select="rerun", selection_mode=("points", "box", "lasso"),
                        width="stretch")
st.caption("Accuracy figures are on the selected split with their 95% bootstrap interval over lesions (vertical "
           "bars); size is the deployable file; latency is the median at batch 1 on the machine that ran the sweep, "
           "with error bars of ± half the interquartile range. The headline's Δ interval is paired (the variant and "
           "its parent on the same resampled lesions): a loss whose interval includes zero is not a measured loss.")

selected = [p["customdata"][0] for p in (event.selection.points if event else []) if p.get("customdata")]
if selected:
    ss["compare_ids"] = selected[:4]
    names = dict(zip(deployable["run_id"], deployable["variant"], strict=False))
    st.write(f"{len(selected)} selected: " + ", ".join(names.get(i, i) for i in selected[:4])
             + (f" (Compare shows 4: the other {len(selected) - 4} are left out)" if len(selected) > 4 else ""))
    if st.button("Open in Compare", key="to_compare"):
        st.switch_page("views/compare.py")
