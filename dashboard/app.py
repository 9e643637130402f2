"""LesionLite dashboard: ``streamlit run dashboard/app.py [-- --db results/results.duckdb]``.

Thin pages over :mod:`core.store.frames` and :mod:`core.store.choosing`; the results store is opened read-only.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.store.frames import synthetic_share
from core.store.results import StoreError
from dashboard.state import all_variants, db_path, share_view, sidebar_filters

VIEWS = Path(__file__).resolve().parent / "views"


def run() -> None:
    st.set_page_config(page_title="LesionLite", page_icon=":material/biotech:", layout="wide")
    path = db_path()
    try:
        df = all_variants()
    except StoreError as exc:
        st.title("LesionLite dashboard")
        st.info(f"No results store to show yet: {exc}.\n\nCreate one with `make demo` (synthetic data) or "
                "`python -m scripts.pipeline -c configs/ham10000-cpu.yaml`, then reload this page. "
                f"To open another store: `streamlit run dashboard/app.py -- --db PATH` or set `LESIONLITE_DB`.")
        st.caption(f"Looked for: `{path}`")
        return
    sidebar_filters(df)
    share = synthetic_share(df)
    if share:  # on every page: a chart of demo models must never pass for a result on real skin
        st.warning(f"**Synthetic demo data.** {share:.0%} of the runs in this store were trained and scored on "
                   "generated images, not real skin: their figures say nothing about real lesions.",
                   icon=":material/science:")
    pages = [
        st.Page(VIEWS / "tradeoffs.py", title="Trade-offs", icon=":material/scatter_plot:", default=True),
        st.Page(VIEWS / "runs.py", title="Runs", icon=":material/table:"),
        st.Page(VIEWS / "run_detail.py", title="Run detail", icon=":material/insights:"),
        st.Page(VIEWS / "compare.py", title="Compare", icon=":material/compare:"),
        st.Page(VIEWS / "live_panel.py", title="Live test", icon=":material/photo_camera:", url_path="live"),
    ]
    try:
        st.navigation(pages).run()
    finally:  # also after a page's st.stop()
        share_view()


run()
