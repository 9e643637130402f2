"""Runs: every run and variant with its metrics, size, latency and ratios against its dense parent."""

from __future__ import annotations

import streamlit as st

from dashboard.state import filtered_variants

st.title("Runs")
df = filtered_variants()
columns = ["run_id", "kind", "model", "variant", "quantization", "pruning_ratio", "accuracy", "balanced_accuracy",
           "auc_macro_ovr", "kappa", "mcc", "ece", "size_mb", "latency_ms", "size_x", "speed_x", "bal_acc_delta",
           "params", "macs", "dataset", "split_hash", "seed", "git_sha", "created_at", "parent_run_id"]
table = df[[c for c in columns if c in df.columns]]
query = st.text_input("Search run id / variant", key="runs_search")
if query:
    table = table[table["run_id"].str.contains(query, case=False) | table["variant"].str.contains(query, case=False)]
st.caption(f"{len(table)} rows. size_x / speed_x / bal_acc_delta are against the dense PyTorch FP32 cell of the "
           "same parent, measured in the same sweep.")
st.dataframe(table, width="stretch", hide_index=True, key="runs_table",
             column_config={"balanced_accuracy": st.column_config.NumberColumn(format="%.3f"),
                            "accuracy": st.column_config.NumberColumn(format="%.3f"),
                            "size_mb": st.column_config.NumberColumn(format="%.2f"),
                            "latency_ms": st.column_config.NumberColumn(format="%.2f")})
st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name="lesionlite-runs.csv",
                   mime="text/csv", key="runs_download")
