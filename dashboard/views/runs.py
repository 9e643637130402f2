"""Runs: every run and variant with its metrics, size, latency and ratios against its dense parent."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.store.choosing import ratio_text
from dashboard.state import BASELINES, baseline, filtered_variants

st.title("Runs")
df = filtered_variants()
columns = ["variant", "model", "balanced_accuracy", "bal_acc_delta", "size_mb", "latency_ms", "size_x", "speed_x",
           "accuracy", "auc_macro_ovr", "kappa", "mcc", "ece", "quantization", "pruning_ratio", "kind", "params",
           "macs", "dataset", "split_hash", "seed", "git_sha", "created_at", "run_id", "parent_run_id"]
table = df[[c for c in columns if c in df.columns]]
table = table.assign(  # one wording everywhere: "2.1x slower", never "0.5x faster"
    **({"size_x": table["size_x"].map(lambda r: ratio_text(r, "smaller", "larger"))} if "size_x" in table else {}),
    **({"speed_x": table["speed_x"].map(lambda r: ratio_text(r, "faster", "slower"))} if "speed_x" in table else {}))
table = table.assign(**({"bal_acc_delta": table["bal_acc_delta"] * 100} if "bal_acc_delta" in table else {}))
text = [c for c in table.columns if pd.api.types.is_object_dtype(table[c])]  # an empty cell, never the word "None"
table = table.assign(**{c: table[c].where(table[c].notna(), "") for c in text})
query = st.text_input("Search run id / variant", key="runs_search")
if query:
    table = table[table["run_id"].str.contains(query, case=False) | table["variant"].str.contains(query, case=False)]
st.caption(f"{len(table)} rows. Size and speed against the {BASELINES[baseline()]} cell of the same parent (the "
           "sidebar's choice), Δ balanced accuracy against its dense PyTorch FP32 cell, measured in the same sweep.")
event = st.dataframe(table, width="stretch", hide_index=True, key="runs_table", on_select="rerun",
                     selection_mode="single-row",
             column_config={"variant": "Variant", "model": "Architecture",
                            "balanced_accuracy": st.column_config.NumberColumn("Balanced accuracy", format="%.3f"),
                            "accuracy": st.column_config.NumberColumn("Accuracy", format="%.3f"),
                            "size_mb": st.column_config.NumberColumn("Size (MB)", format="%.2f"),
                            "latency_ms": st.column_config.NumberColumn("Latency (ms, batch 1)", format="%.2f"),
                            "bal_acc_delta": st.column_config.NumberColumn("Δ bal. acc. (pts)", format="%+.1f"),
                            "size_x": "Size vs dense", "speed_x": "Speed vs dense",
                            "auc_macro_ovr": st.column_config.NumberColumn("ROC-AUC (macro)", format="%.3f"),
                            "kappa": st.column_config.NumberColumn("Cohen's kappa", format="%.3f"),
                            "mcc": st.column_config.NumberColumn("MCC", format="%.3f"),
                            "ece": st.column_config.NumberColumn("ECE", format="%.3f"),
                            "quantization": "Quantization", "pruning_ratio": "Pruned share", "kind": "Kind",
                            "params": "Parameters", "macs": "MACs", "dataset": "Dataset", "split_hash": "Split hash",
                            "seed": "Seed", "git_sha": "Git SHA", "created_at": "Created", "run_id": "Run id",
                            "parent_run_id": "Parent run"})
rows = event.selection.rows if event else []
if rows:
    st.session_state["detail_id"] = table.iloc[rows[0]]["run_id"]
    st.switch_page("views/run_detail.py")
st.caption("Select a row to open its detail.")
st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name="lesionlite-runs.csv",
                   mime="text/csv", key="runs_download")
