"""Dashboard state: which store, the cached read-only connection and queries, the shared sidebar filters.

Logic lives in :mod:`core.store.analysis`; this module only wires it to Streamlit's caches and widgets.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from core.serve.ood import OodGate
from core.serve.predict import Predictor, load_predictor
from core.store.analysis import Filters, apply_filters, variants_frame
from core.store.results import DEFAULT_DB, ResultsStore

DB_ENV = "LESIONLITE_DB"
SAMPLES_ENV = "LESIONLITE_SAMPLES"
DEFAULT_SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ham10000-samples"


def db_path() -> Path:
    """``streamlit run dashboard/app.py -- --db PATH``, else $LESIONLITE_DB, else results/results.duckdb."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return Path(args.db or os.environ.get(DB_ENV) or DEFAULT_DB)


def samples_dir() -> Path:
    return Path(os.environ.get(SAMPLES_ENV) or DEFAULT_SAMPLES)


def reader() -> ResultsStore:
    """A short-lived read-only connection (use with ``with``): holding one open would lock out writers."""
    return ResultsStore(db_path(), read_only=True)


def _stamp(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_data(show_spinner=False)
def _variants(path: str, stamp: float, split: str) -> pd.DataFrame:  # stamp: re-query when the file changes
    with ResultsStore(path, read_only=True) as store:
        return variants_frame(store, split=split)


def all_variants(split: str = "test") -> pd.DataFrame:
    path = db_path()
    return _variants(str(path), _stamp(path), split)


@st.cache_resource(show_spinner="Loading model ...")
def predictor(card_folder: str) -> Predictor:
    return load_predictor(card_folder, threads=2)


@st.cache_resource(show_spinner="Loading the lesion-photo gate ...")
def gate(card_folder: str) -> OodGate | None:
    """The variant's out-of-distribution gate, or None where its folder has none."""
    return OodGate.load(Path(card_folder))


def sidebar_filters(df: pd.DataFrame) -> None:
    """Filter widgets in the sidebar; their values live in session state under fixed keys."""
    sb = st.sidebar
    sb.header("Filters")
    sb.selectbox("Split", ["test", "val"], key="f_split", help="which split's metrics are shown")
    sb.multiselect("Dataset", sorted(df["dataset"].dropna().unique()), key="f_dataset")
    sb.multiselect("Architecture", sorted(df["model"].dropna().unique()), key="f_model")
    sb.multiselect("Pruning ratio", sorted(df["pruning_ratio"].dropna().unique()), key="f_ratio")
    sb.multiselect("Quantization", sorted(df["quantization"].dropna().unique()), key="f_quant")
    sb.caption(f"Store: `{db_path()}`")


def filtered_variants() -> pd.DataFrame:
    """All runs with the sidebar filters applied (split from the sidebar)."""
    ss = st.session_state
    df = all_variants(ss.get("f_split", "test"))
    return apply_filters(df, Filters(datasets=tuple(ss.get("f_dataset", ())), models=tuple(ss.get("f_model", ())),
                                     ratios=tuple(ss.get("f_ratio", ())), quantizations=tuple(ss.get("f_quant", ()))))
