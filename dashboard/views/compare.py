"""Compare 2-4 variants side by side, with per-class recall deltas against the dense parent (and how many images
each delta rests on)."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from core.store.choosing import ratio_text
from core.store.frames import class_support, recall_deltas
from dashboard.charts import phone_friendly
from dashboard.state import BASELINES, baseline, filtered_variants, reader, remembered
from dashboard.wording import short_names

# Key figures first; True: higher is better, False: lower is better (the best of each row is highlighted).
ROWS = {"bal_acc_delta": ("Δ balanced accuracy vs dense", True), "size_mb": ("size (MB)", False),
        "latency_ms": ("latency (ms, batch 1)", False), "size_x": ("smaller (x)", True),
        "speed_x": ("faster (x)", True), "balanced_accuracy": ("balanced accuracy", True),
        "triage_malignant_sensitivity": ("referral sensitivity (possibly malignant)", True),
        "triage_malignant_specificity": ("referral specificity (possibly malignant)", True),
        "triage_melanoma_sensitivity": ("referral sensitivity (melanoma)", True),
        "triage_melanoma_specificity": ("referral specificity (melanoma)", True),
        "accuracy": ("accuracy", True), "auc_macro_ovr": ("ROC-AUC (macro)", True), "kappa": ("kappa", True),
        "mcc": ("MCC", True), "ece": ("ECE", False), "quantization": ("quantization", None),
        "pruning_ratio": ("pruning ratio", None), "model": ("architecture", None)}

st.title("Compare variants")
df = filtered_variants()
names = short_names(df)
ids = df["run_id"].tolist()
ss = st.session_state
picked = ss.pop("compare_ids", None)  # points selected on Trade-offs
current = picked if picked else (ss.get("compare_pick") or remembered("compare_pick", []))
ss["compare_pick"] = [i for i in current if i in ids][:4] or ids[:2]  # a shared link's, the last ones, or two
chosen = st.multiselect("Variants (2-4)", ids, max_selections=4, key="compare_pick", format_func=names.get)
if len(chosen) < 2:
    st.info("Pick at least two variants (or select points on the Trade-offs page).")
    st.stop()
side = df.set_index("run_id").reindex(columns=list(ROWS)).loc[chosen].T  # stores without a figure: blank rows
side.columns = [names[c] for c in chosen]
side.index = pd.Index([ROWS[r][0] for r in side.index], name="figure")  # a named header (axe: no empty th)


def _highlight(row: pd.Series) -> list[str]:
    better = next(v[1] for v in ROWS.values() if v[0] == row.name)
    values = pd.to_numeric(row, errors="coerce")
    if better is None or values.isna().all():
        return [""] * len(row)
    best = values.max() if better else values.min()
    return ["background-color: #d8f0dd; font-weight: 600" if v == best else "" for v in values]


# Each row in the words every other page uses: "+3.5 pts", "1.9x smaller" / "1.1x larger"; blank where not stored.
FORMATS = {"Δ balanced accuracy vs dense": lambda v: f"{v * 100:+.1f} pts",
           "smaller (x)": lambda v: ratio_text(v, "smaller", "larger"),
           "faster (x)": lambda v: ratio_text(v, "faster", "slower")}


def _format(row: pd.Series) -> pd.Series:
    number = FORMATS.get(row.name, lambda v: f"{v:.3f}")
    return row.map(lambda v: "" if v is None or (isinstance(v, float) and v != v)
                   else number(v) if isinstance(v, float) else str(v))


# Shown as text (rows mix numbers and names, which Arrow cannot hold in one column); highlighted on the numbers.
styles = side.apply(_highlight, axis=1, result_type="broadcast")
st.dataframe(side.apply(_format, axis=1).style.apply(lambda _: styles, axis=None), width="stretch",
             key="compare_table", height=35 * (len(side) + 1) + 3)  # rows of 35 px + the header: no blank row
st.caption(f"Best value of each row highlighted. Ratios against the {BASELINES[baseline()]} cell of the same "
           "parent (the sidebar's choice), Δ against its dense PyTorch FP32 cell, measured in the same sweep. "
           "Referral figures are each variant's screening operating point (fitted on validation for 0.90 / 0.85 "
           "sensitivity) on the chosen split.")
split = st.session_state.get("f_split", "test")
with reader() as store:
    deltas = recall_deltas(store, chosen, split=split)
    support = class_support(store, chosen[0], split=split)
if deltas.notna().any().any():
    long = deltas.reset_index().melt(id_vars="class", var_name="run_id", value_name="recall delta")
    long["variant"] = long["run_id"].map(names)
    long["images"] = long["class"].map(support)
    long["class"] = long["class"] + " (n=" + long["images"].fillna(0).astype(int).astype(str) + ")"
    fig = px.bar(long, x="class", y="recall delta", color="variant", barmode="group", hover_data=["images"],
                 title=f"Per-class recall minus the dense FP32 parent's ({split}; n = images of the class)")
    fig.add_hline(y=0, line_color="#444")
    phone_friendly(fig, plot_height=320)
    st.plotly_chart(fig, width="stretch", key="compare_deltas")
    few = support[support < 30].dropna()
    if not few.empty:
        st.caption("Few images: " + ", ".join(f"{c} {int(n)}" for c, n in few.items()) +
                   f". One image of a class with n images moves its recall by 1/n (e.g. {1 / few.min():.2f}).")
    mel = deltas.loc["mel"].dropna()
    for run, drop in mel[mel < 0].items():
        st.warning(f"{names.get(run, run)}: melanoma recall drops by {-drop * 100:.1f} points against its dense "
                   "model, the error that matters most.")
else:
    st.caption("No dense FP32 baseline cell of the same parent to compare against.")
