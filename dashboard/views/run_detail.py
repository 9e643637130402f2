"""Run detail: confusion matrix, per-class figures, training curves, ROC, calibration and provenance."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.curves import group_roc, reliability, roc_curves, uncalibrated_probs
from core.store.choosing import ratio_text
from core.store.frames import METRIC_LABELS, confusion_matrix_frame, run_detail
from core.triage import MALIGNANT_GROUP, MELANOMA_GROUP
from dashboard.charts import phone_friendly
from dashboard.state import BASELINES, baseline, filtered_variants, reader, remembered
from dashboard.wording import short_names

st.title("Run detail")
df = filtered_variants()
if df.empty:
    st.info("No runs match the filters.")
    st.stop()
ids = df["run_id"].tolist()
ss = st.session_state
opened = ss.pop("detail_id", None)  # a row clicked on Runs, or a point on Trade-offs
if opened in ids:
    ss["detail_run"] = opened
elif ss.get("detail_run") not in ids:  # a shared link's run, the last one looked at, or the first
    kept = remembered("detail_run", None)
    ss["detail_run"] = kept if kept in ids else ids[0]
names = short_names(df)
run_id = st.selectbox("Run", ids, key="detail_run", format_func=lambda i: names.get(i, i))
with reader() as store:
    detail = run_detail(store, run_id)
st.caption(f"Run `{run_id}`")
# One Split for the whole dashboard: the sidebar's (in the URL); a page-own switch reset and disagreed with it.
splits = sorted(detail.per_class["split"].unique())
split = ss.get("f_split", "test")
if splits and split not in splits:
    st.caption(f"This run has no {split} figures: showing {splits[0]}.")
    split = splits[0]
elif not splits:
    split = None
scalars = detail.metrics[detail.metrics["split"] == split].set_index("name")["value"] if split else None
if scalars is not None and not scalars.empty:
    cols = st.columns(6)
    for col, name in zip(cols, ["accuracy", "balanced_accuracy", "auc_macro_ovr", "kappa", "mcc", "ece"], strict=True):
        low, high = scalars.get(f"{name}_ci_low"), scalars.get(f"{name}_ci_high")
        col.metric(METRIC_LABELS[name], f"{scalars.get(name, np.nan):.3f}",
                   help=f"95% interval over lesions: [{low:.3f}, {high:.3f}]" if low is not None else None)
        if low is not None:
            col.caption(f"[{low:.3f}, {high:.3f}]")
row = df.set_index("run_id").loc[run_id]
deploy = detail.metrics[detail.metrics["split"] == "deploy"].set_index("name")["value"]
if not deploy.empty:
    cards = [("size", f"{deploy.get('size_mb', np.nan):.2f} MB", ratio_text(row.get("size_x", np.nan), "smaller",
                                                                           "larger")),
             ("latency, batch 1", f"{deploy.get('latency_b1_ms', np.nan):.2f} ms",
              f"IQR {deploy.get('latency_b1_iqr_ms', np.nan):.2f} ms · "
              + ratio_text(row.get("speed_x", np.nan), "faster", "slower")),
             ("parameters", f"{deploy.get('params', np.nan) / 1e6:.2f} M", None),
             ("MACs", f"{deploy.get('macs', np.nan) / 1e6:.0f} M", None),
             ("Δ balanced accuracy", f"{row.get('bal_acc_delta', np.nan) * 100:+.1f} pts",
              f"vs dense parent, paired 95% interval [{row['bal_acc_delta_ci_low'] * 100:+.1f}, "
              f"{row['bal_acc_delta_ci_high'] * 100:+.1f}]" if pd.notna(row.get("bal_acc_delta_ci_low"))
              else "vs dense parent"),
             ("export agreement", f"{deploy['export_top1_agreement']:.3f}" if "export_top1_agreement" in deploy
              else "—", "top-1, ONNX vs PyTorch")]
    for col, (label, value, note) in zip(st.columns(len(cards)), cards, strict=True):
        col.metric(label, value, help=note)
        if note:
            col.caption(note)
    st.caption(f"Ratios against the {BASELINES[baseline()]} cell of the same parent (the sidebar's choice); Δ "
               "against its dense PyTorch FP32 cell, paired.")

left, right = st.columns(2)
if split:
    normalize = left.toggle("Row-normalized", value=True, key="detail_norm")
    cm = confusion_matrix_frame(detail.confusion, split, normalize=normalize)
    left.plotly_chart(px.imshow(cm, text_auto=".2f" if normalize else "d", color_continuous_scale="Blues",
                                labels={"x": "predicted", "y": "true"}, title="Confusion matrix"),
                      width="stretch", key="detail_cm")
    per_class = detail.per_class[detail.per_class["split"] == split].copy()
    per_class["class"] = per_class["class"] + " (n=" + per_class["support"].astype(int).astype(str) + ")"
    pc = per_class.melt(id_vars=["class", "support"], value_vars=["precision", "recall", "f1"])
    right.plotly_chart(px.bar(pc, x="class", y="value", color="variable", barmode="group", hover_data=["support"],
                              labels={"value": "score", "variable": "per-class figure"},
                              title="Per class (n = images of the class in this split)"),
                       width="stretch", key="detail_pc")

if not detail.history.empty:
    loss_col, acc_col = st.columns(2)
    losses = detail.history[detail.history["name"] == "train_loss"]
    accs = detail.history[detail.history["name"].isin(["train_accuracy", "val_accuracy", "val_balanced_accuracy"])]
    loss_col.plotly_chart(px.line(losses, x="epoch", y="value", markers=True, title="Training loss",
                                  labels={"value": "loss", "epoch": "epoch"}), width="stretch", key="detail_loss")
    acc_col.plotly_chart(px.line(accs, x="epoch", y="value", color="name", markers=True, range_y=[0, 1],
                                 title="Accuracy per epoch", labels={"value": "accuracy", "name": "measured on"}),
                         width="stretch", key="detail_hist")
else:
    st.caption("No training history for this run (evaluation-only or unpruned variant).")

preds = detail.predictions[detail.predictions["split"] == split] if split else detail.predictions
if not preds.empty:
    labels = preds["label"].to_numpy()
    probs = np.stack(preds["probs"].to_numpy())
    a, b = st.columns(2)
    roc = go.Figure()
    for cls, (fpr, tpr) in roc_curves(labels, probs).items():
        roc.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{cls} (AUC {np.trapezoid(tpr, fpr):.3f})"))
    roc.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot"}, name="chance"))
    roc.update_layout(title="ROC (one vs rest)", xaxis_title="false positive rate", yaxis_title="true positive rate")
    phone_friendly(roc, plot_height=300)
    a.plotly_chart(roc, width="stretch", key="detail_roc")
    figures = scalars if scalars is not None else pd.Series(dtype=float)
    temperature = float(figures.get("temperature", 1.0))
    shown = {f"calibrated (T = {temperature:.2f})": probs, "uncalibrated": uncalibrated_probs(probs, temperature)} \
        if temperature != 1.0 else {"accuracy": probs}
    cal = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot"}, name="perfect")])
    for i, (name, p) in enumerate(shown.items()):
        rel = reliability(labels, p)
        # Counts printed for one curve only, below its markers (two curves' labels overlapped); the other's on hover.
        cal.add_trace(go.Scatter(x=rel["confidence"], y=rel["accuracy"], name=name,
                                 mode="lines+markers+text" if i == 0 else "lines+markers",
                                 text=rel["count"], textposition="bottom right", textfont={"size": 10},
                                 customdata=rel["count"],
                                 hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} images"))
    ece = f"ECE {figures.get('ece', np.nan):.3f}"
    if "ece_uncalibrated" in figures:
        ece += f", before calibration {figures['ece_uncalibrated']:.3f}"
    cal.update_layout(title=f"Reliability ({ece})", xaxis_title="confidence (numbers: images per bin)",
                      yaxis_title="accuracy")
    phone_friendly(cal, plot_height=300)
    b.plotly_chart(cal, width="stretch", key="detail_cal")
    screen = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#999"},
                                   name="chance")])
    # Each operating point in its own curve's colour: a red cross on the blue curve read as another curve's point.
    colours = {"possibly malignant": "#1f77b4", "melanoma": "#d62728"}
    for name, group in (("possibly malignant", MALIGNANT_GROUP), ("melanoma", MELANOMA_GROUP)):
        fpr, tpr, auc = group_roc(labels, probs, group)
        if not len(fpr):
            continue
        screen.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} vs the rest (AUC {auc:.3f})",
                                    line={"color": colours[name]}))
        key = "malignant" if group == MALIGNANT_GROUP else "melanoma"
        sens, spec = figures.get(f"triage_{key}_sensitivity"), figures.get(f"triage_{key}_specificity")
        if sens is not None and spec is not None and pd.notna(sens) and pd.notna(spec):
            screen.add_trace(go.Scatter(x=[1 - spec], y=[sens], mode="markers",
                                        marker={"size": 13, "symbol": "x", "color": colours[name]},
                                        name=f"{name} operating point: sensitivity {sens:.2f}, specificity "
                                             f"{spec:.2f}"))
    screen.update_layout(title=f"Screening ROC ({split}): the referral question, operating points fitted on val",
                         xaxis_title="1 - specificity", yaxis_title="sensitivity")
    phone_friendly(screen, plot_height=320)
    st.plotly_chart(screen, width="stretch", key="detail_screening_roc")
else:
    st.caption("No per-image predictions stored for this run (stores written before schema 2), so no ROC curves "
               "or reliability diagram.")

with st.expander("Provenance", expanded=False):
    run = detail.run
    st.write({k: str(run[k]) for k in ("run_id", "parent_run_id", "kind", "model", "variant", "git_sha", "seed",
                                       "split_hash", "dataset", "dataset_fingerprint", "device", "created_at")})
    st.json(json.loads(run["config"]))
