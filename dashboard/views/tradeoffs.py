"""Trade-offs: which variant, at what cost — a headline recommendation, then a metric against size or latency with
the Pareto frontier and the dense baselines."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.compress.modes import RUNTIMES
from core.errors import ModelError
from core.store.choosing import DeployedChoice, deployed_choice, no_fit_reason, ratio_text, recommend
from core.store.frames import BASELINE_VARIANT, METRIC_LABELS
from dashboard.filters import chart_points
from dashboard.state import BASELINE_VARIANTS, BASELINES, all_variants, baseline, filtered_variants, reader, remembered
from dashboard.tradeoff_chart import X_AXES, Marked, selected_run_ids, tradeoff_chart

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
        reason = no_fit_reason(candidates, max_loss=loss / 100, max_size_mb=size_budget, max_latency_ms=latency_budget)
        st.caption(reason if "Ratios against" in reason else f"{reason} Allow a larger loss or a larger budget.")
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
marked = [Marked("served by the site (default)", deployable[is_served], "circle", "#c0392b")]
if pick is not None:  # the headline's variant, marked as consistently as the served one
    marked.append(Marked("recommended (the headline)", deployable[deployable["run_id"] == pick.run_id], "diamond",
                         "#1f3a5f"))
for key, shape in (("onnx", "square"), ("eager", "triangle-up")):  # both baselines, the chosen one said so
    marked.append(Marked(f"baseline: {BASELINES[key]}" + (" (ratios against this)" if key == base_choice else ""),
                         deployable[deployable["variant"] == BASELINE_VARIANTS[key]], shape,
                         "#b8860b" if key == base_choice else "#777"))
spec = tradeoff_chart(drawn, deployable, x=x, metric=metric, log_x=log_x, split=split, marked=marked)
event = st.vega_lite_chart(spec, key="tradeoff_chart", on_select="rerun", width="stretch")
st.caption("Accuracy figures are on the selected split with their 95% bootstrap interval over lesions (vertical "
           "bars); size is the deployable file; latency is the median at batch 1 on the machine that ran the sweep, "
           "with error bars of ± half the interquartile range. The headline's Δ interval is paired (the variant and "
           "its parent on the same resampled lesions): a loss whose interval includes zero is not a measured loss.")

selected = selected_run_ids(event.selection if event else {}, drawn, x=x, metric=metric)
if selected:
    ss["compare_ids"] = selected[:4]
    names = dict(zip(deployable["run_id"], deployable["variant"], strict=False))
    st.write(f"{len(selected)} selected: " + ", ".join(names.get(i, i) for i in selected[:4])
             + (f" (Compare shows 4: the other {len(selected) - 4} are left out)" if len(selected) > 4 else ""))
    if st.button("Open in Compare", key="to_compare"):
        st.switch_page("views/compare.py")
