"""Dashboard state: which store, the cached read-only connection and queries, the shared sidebar filters.

Logic lives in :mod:`core.store.frames` and :mod:`core.store.choosing`; this module only wires it to Streamlit's
caches and widgets.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from core.compress.modes import RUNTIMES
from core.store.frames import BASELINE_VARIANT, ONNX_BASELINE_VARIANT, variants_frame
from core.store.results import DEFAULT_DB, ResultsStore
from dashboard.filters import Filters, apply_filters

if TYPE_CHECKING:  # the model code (torch, ONNX Runtime) loads with the live panel, not with every page
    from core.serve.deployed import DeployedModel

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


# What "x smaller" and "x faster" are measured against on every page (one choice, in the sidebar and the URL);
# Δ balanced accuracy is always against the dense PyTorch FP32 parent.
BASELINES = {"onnx": "dense fp32 ONNX Runtime", "eager": "dense PyTorch eager"}
BASELINE_VARIANTS = {"onnx": ONNX_BASELINE_VARIANT, "eager": BASELINE_VARIANT}  # the cell each one is


def baseline() -> str:
    """The chosen ratio baseline (``onnx`` by default, and for a shared link with an unknown value)."""
    chosen = st.session_state.get("to_base", "onnx")
    return chosen if chosen in BASELINES else "onnx"


def all_variants(split: str = "test") -> pd.DataFrame:
    """Every stored run on ``split``, its size and speed ratios against the chosen baseline."""
    path = db_path()
    df = _variants(str(path), _stamp(path), split)
    if baseline() == "onnx" and "size_x_onnx" in df.columns:
        df = df.assign(size_x=df["size_x_onnx"], speed_x=df["speed_x_onnx"])
    return df


def deployed_model(card_folder: str) -> DeployedModel:
    """The variant as the site serves it (gate, predictor, threshold), reloaded when its card, model or gate file
    changes: a re-run sweep rewrites them, and a gate fitted while the dashboard runs counts on the next run."""
    from core.serve.ood import GATE_FILE

    folder = Path(card_folder)
    files = [*folder.glob("model*"), folder / GATE_FILE]
    return _deployed(card_folder, tuple(_stamp(p) for p in files))


@st.cache_resource(show_spinner="Loading model ...")
def _deployed(card_folder: str, versions: tuple[float, ...]) -> DeployedModel:  # versions: part of the cache key
    from core.serve.deployed import DeployedModel

    return DeployedModel.load(card_folder, threads=2)


# Widget keys that a shared link carries (?f_model=...&to_x=latency_ms), with how to read them back from text.
SHAREABLE: dict[str, type] = {"f_split": str, "f_dataset": list, "f_model": list, "f_ratio": list, "f_quant": list,
                              "f_runtime": list, "to_runtime": str,
                              "to_metric": str, "to_x": str, "to_log": bool, "to_loss": float, "to_size": float,
                              "to_latency": float, "to_base": str, "detail_run": str, "compare_pick": list}
KEPT = "_kept_view"  # the last value of every shareable widget, kept while its page is not shown


def _parse(kind: type, values: list[str]) -> object:
    if kind is list:
        return values
    text = values[-1]
    if kind is bool:
        return text.lower() in ("1", "true", "yes")
    return kind(text)


def restore_view(options: dict[str, list]) -> None:
    """On a session's first run, set the widgets from the URL's query (a shared view); values that no longer
    exist among ``options`` (key -> allowed values) are dropped rather than failing the page."""
    ss = st.session_state
    if ss.get("_view_restored"):
        return
    ss["_view_restored"] = True
    for key, kind in SHAREABLE.items():
        values = st.query_params.get_all(key)
        if not values:
            continue
        try:
            value = _parse(kind, values)
        except ValueError:
            continue
        if key in options:
            allowed = [str(o) for o in options[key]]
            if kind is list:
                value = [options[key][allowed.index(v)] for v in value if v in allowed]  # type: ignore[union-attr]
            elif str(value) not in allowed:
                continue
        ss[key] = value


def remembered(key: str, default: object) -> object:
    """A page widget's last value, kept across pages: Streamlit forgets the state of widgets a page does not draw,
    so without this a view's settings reset after visiting another page."""
    return st.session_state.get(KEPT, {}).get(key, default)


def share_view() -> None:
    """Write the current widget values into the URL, so the address bar is a link to this view; widgets of
    pages not shown now keep their last value (in the URL too)."""
    ss = st.session_state
    kept = ss.setdefault(KEPT, {})
    for key in SHAREABLE:
        if key in ss:
            kept[key] = ss[key]
        value = kept.get(key)
        if value is None or value == [] or value == "":
            if key in st.query_params:
                del st.query_params[key]
            continue
        st.query_params[key] = [str(v) for v in value] if isinstance(value, list) else str(value)


def sidebar_filters(df: pd.DataFrame) -> None:
    """Filter widgets in the sidebar; their values live in session state under fixed keys (and in the URL)."""
    options = {"f_split": ["test", "val"], "f_dataset": sorted(df["dataset"].dropna().unique()),
               "f_model": sorted(df["model"].dropna().unique()),
               "f_ratio": sorted(df["pruning_ratio"].dropna().unique()),
               "f_quant": sorted(df["quantization"].dropna().unique()),
               "f_runtime": sorted(df["runtime"].dropna().unique()) if "runtime" in df.columns else [],
               "to_metric": ["accuracy", "balanced_accuracy", "auc_macro_ovr", "kappa", "mcc"],
               "to_x": ["size_mb", "latency_ms"]}
    restore_view(options)
    sb = st.sidebar
    sb.header("Filters")
    sb.selectbox("Split", options["f_split"], key="f_split", help="which split's metrics are shown")
    sb.multiselect("Dataset", options["f_dataset"], key="f_dataset")
    sb.multiselect("Architecture", options["f_model"], key="f_model")
    sb.multiselect("Pruning ratio", options["f_ratio"], key="f_ratio")
    sb.multiselect("Quantization", options["f_quant"], key="f_quant")
    sb.multiselect("Runtime", options["f_runtime"], key="f_runtime", format_func=lambda r: RUNTIMES.get(r, r),
                   help="which runtime runs the file: ONNX Runtime, PyTorch, or a phone runtime")
    if st.session_state.setdefault("to_base", remembered("to_base", "onnx")) not in BASELINES:
        st.session_state["to_base"] = "onnx"
    sb.radio("Ratios against", list(BASELINES), format_func=BASELINES.get, key="to_base",
             help="what 'x smaller' and 'x faster' are measured against on every page, in the same sweep")
    sb.caption(f"Store: `{db_path()}`. The address bar links to this view.")


def filtered_variants() -> pd.DataFrame:
    """All runs with the sidebar filters applied (split from the sidebar)."""
    ss = st.session_state
    df = all_variants(ss.get("f_split", "test"))
    return apply_filters(df, Filters(datasets=tuple(ss.get("f_dataset", ())), models=tuple(ss.get("f_model", ())),
                                     ratios=tuple(ss.get("f_ratio", ())), quantizations=tuple(ss.get("f_quant", ())),
                                     runtimes=tuple(ss.get("f_runtime", ()))))
