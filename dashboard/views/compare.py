"""Compare 2-4 variants side by side, with per-class recall deltas against the dense parent."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from core.store.analysis import recall_deltas
from dashboard.state import filtered_variants, reader

st.title("Compare variants")
df = filtered_variants()
ids = df["run_id"].tolist()
preselected = [i for i in st.session_state.get("compare_ids", []) if i in ids]
chosen = st.multiselect("Variants (2-4)", ids, default=preselected or ids[:2], max_selections=4, key="compare_pick")
if len(chosen) < 2:
    st.info("Pick at least two variants (or select points on the Trade-offs page).")
    st.stop()
cols = ["variant", "model", "quantization", "pruning_ratio", "accuracy", "balanced_accuracy", "auc_macro_ovr",
        "kappa", "mcc", "ece", "size_mb", "latency_ms", "size_x", "speed_x", "bal_acc_delta"]
side = df.set_index("run_id").loc[chosen, cols].T
side = side.map(lambda v: f"{v:.3f}" if isinstance(v, float) else str(v))  # mixed column types: show as text
st.dataframe(side, width="stretch", key="compare_table")
with reader() as store:
    deltas = recall_deltas(store, chosen, split=st.session_state.get("f_split", "test"))
if deltas.notna().any().any():
    long = deltas.reset_index().melt(id_vars="class", var_name="run_id", value_name="recall delta")
    fig = px.bar(long, x="class", y="recall delta", color="run_id", barmode="group",
                 title="Per-class recall minus the dense FP32 parent's (where does compression hurt?)")
    fig.add_hline(y=0, line_color="#444")
    st.plotly_chart(fig, width="stretch", key="compare_deltas")
    mel = deltas.loc["mel"].dropna()
    if not mel.empty and mel.min() < 0:
        st.warning(f"Melanoma recall drops by up to {-mel.min():.3f} against the dense model: the error that "
                   "matters most.")
else:
    st.caption("No dense FP32 baseline cell of the same parent to compare against.")
