"""Trade-offs: a metric against model size or latency, with the Pareto frontier and the dense baselines."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core.store.analysis import BASELINE_VARIANT, METRIC_LABELS, pareto_front
from dashboard.state import filtered_variants

st.title("Accuracy / size / latency trade-offs")
df = filtered_variants()
deployable = df[df["kind"] == "variant"].dropna(subset=["size_mb", "latency_ms"])
c1, c2, c3 = st.columns([2, 2, 1])
metric = c1.selectbox("Metric", [m for m in METRIC_LABELS if m != "ece"], format_func=METRIC_LABELS.get,
                      index=1, key="to_metric")
x = c2.selectbox("Against", ["size_mb", "latency_ms"], key="to_x",
                 format_func={"size_mb": "Model size (MB)", "latency_ms": "Latency (ms / image, batch 1)"}.get)
log_x = c3.toggle("Log scale", value=True, key="to_log")

if deployable.empty:
    st.info("No measured variants match the filters. Run a sweep (`python -m scripts.sweep -c ...`) "
            "or clear the filters in the sidebar.")
    st.stop()

fig = go.Figure()
symbols = ["circle", "square", "diamond", "triangle-up", "x", "cross", "pentagon"]
quant_symbol = {q: symbols[i % len(symbols)] for i, q in enumerate(sorted(deployable["quantization"].unique()))}
for model, part in deployable.groupby("model"):
    fig.add_trace(go.Scatter(
        x=part[x], y=part[metric], mode="markers", name=model,
        marker={"size": 9 + 22 * part["pruning_ratio"], "symbol": [quant_symbol[q] for q in part["quantization"]],
                "line": {"width": 1, "color": "#333"}},
        customdata=part[["run_id", "variant", "accuracy", "balanced_accuracy", "size_mb", "latency_ms"]].to_numpy(),
        hovertemplate=("<b>%{customdata[1]}</b><br>accuracy %{customdata[2]:.3f}<br>balanced accuracy "
                       "%{customdata[3]:.3f}<br>size %{customdata[4]:.2f} MB<br>latency %{customdata[5]:.2f} ms"
                       "<extra>%{fullData.name}</extra>"),
    ))
front = pareto_front(deployable, x=x, y=metric)
fig.add_trace(go.Scatter(x=front[x], y=front[metric], mode="lines", name="Pareto frontier",
                         line={"dash": "dot", "color": "#555"}, hoverinfo="skip"))
base = deployable[deployable["variant"] == BASELINE_VARIANT]
fig.add_trace(go.Scatter(x=base[x], y=base[metric], mode="markers", name="dense FP32 baseline",
                         marker={"symbol": "star", "size": 18, "color": "gold", "line": {"width": 1, "color": "#000"}},
                         hoverinfo="skip"))
fig.update_layout(xaxis_title=x.replace("_", " "), yaxis_title=METRIC_LABELS[metric], height=560,
                  legend_title="Architecture (symbol: quantization, size: pruning ratio)")
fig.update_xaxes(type="log" if log_x else "linear")
event = st.plotly_chart(fig, key="tradeoff_chart", on_select="rerun", selection_mode=("points", "box", "lasso"),
                        width="stretch")
st.caption("Symbols: " + ", ".join(f"{q} = {s}" for q, s in quant_symbol.items()) +
           ". Accuracy figures are on the selected split; size is the deployable file, latency is batch 1 on the "
           "machine that ran the sweep.")

selected = [p["customdata"][0] for p in (event.selection.points if event else []) if p.get("customdata")]
if selected:
    st.session_state["compare_ids"] = selected[:4]
    st.write(f"{len(selected)} selected: " + ", ".join(selected[:4]))
    if st.button("Open in Compare", key="to_compare"):
        st.switch_page("views/compare.py")
