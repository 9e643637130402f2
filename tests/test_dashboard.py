"""The Streamlit dashboard: every page through AppTest against a real fixture store, and the frames and choices
behind it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.curves import reliability, roc_curves
from core.errors import ModelError
from core.store.choosing import deployed_variant, pareto_front, recommend
from core.store.frames import recall_deltas, run_detail, variants_frame
from core.store.results import ResultsStore
from dashboard.filters import Filters, apply_filters, chart_points
from tests.fresh_release import committed, fresh_copy

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
PAGES = ["views/tradeoffs.py", "views/runs.py", "views/run_detail.py", "views/compare.py", "views/live_panel.py"]


def test_pareto_front() -> None:
    df = pd.DataFrame({"size": [1, 2, 3, 4], "acc": [0.5, 0.4, 0.7, 0.6]})
    assert pareto_front(df, x="size", y="acc")["size"].tolist() == [1, 3]


def test_a_large_store_is_charted_by_its_frontier_and_the_best_of_each_kind() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    df = pd.DataFrame({"model": rng.choice(["a", "b"], n), "family": rng.choice(["dense", "macs"], n),
                       "quantization": rng.choice(["fp32", "static", "dynamic"], n),
                       "pruning_ratio": rng.choice([0.0, 0.5], n), "size": rng.uniform(1, 100, n),
                       "acc": rng.uniform(0.3, 0.9, n)})
    keep = pd.Series(False, index=df.index)
    keep.iloc[[7, 4000]] = True  # e.g. the served variant and a baseline, whatever their scores
    drawn = chart_points(df, x="size", y="acc", limit=1500, keep=keep)
    assert len(drawn) < 100 and drawn.index.is_unique
    assert set(pareto_front(df, x="size", y="acc").index) <= set(drawn.index)
    assert {7, 4000} <= set(drawn.index)
    best = df.groupby(["model", "family", "quantization", "pruning_ratio"])["acc"].idxmax()
    assert set(best) <= set(drawn.index)  # every kind of variant keeps its best
    assert chart_points(df.head(100), x="size", y="acc", limit=1500).equals(df.head(100))  # small: all of it


def test_variants_frame_and_filters(sweep_store: Path) -> None:
    with ResultsStore(sweep_store, read_only=True) as store:
        df = variants_frame(store)
        assert {"train", "variant"} == set(df["kind"])
        base = df[df["variant"] == "dense-torch_fp32"].iloc[0]
        assert base["size_x"] == 1.0 and base["speed_x"] == 1.0 and base["bal_acc_delta"] == 0.0
        static = apply_filters(df, Filters(quantizations=("static",)))
        assert set(static["variant"]) == {"dense-static", "pruned-0.5-static"}
        deltas = recall_deltas(store, [base["run_id"]])
        assert (deltas.fillna(0).to_numpy() == 0).all()
        detail = run_detail(store, static["run_id"].iloc[0])
        assert not detail.predictions.empty and not detail.confusion.empty


def test_deployed_variant_is_chosen_on_validation_not_test(sweep_store: Path, tmp_path: Path) -> None:
    with ResultsStore(sweep_store, read_only=True) as store:
        static = store.query("""SELECT r.run_id, r.variant, m.split, m.value FROM runs r JOIN metrics m USING (run_id)
                                WHERE r.variant LIKE '%-static' AND m.name = 'balanced_accuracy'""")
        chosen = deployed_variant(store)
    assert set(static["split"]) == {"val", "test"}  # the sweep stores both
    val = static[static["split"] == "val"].set_index("variant")["value"]
    assert chosen.name == val.idxmax() and (chosen / "card.json").is_file()
    # Make the other static cell the best on test but not on validation: the choice must not move.
    other = next(v for v in val.index if v != chosen.name)
    db = tmp_path / "copy.duckdb"
    db.write_bytes(sweep_store.read_bytes())
    with ResultsStore(db) as store:
        best_on = ("UPDATE metrics SET value = 1.0 WHERE split = ? AND name = 'balanced_accuracy' AND run_id = "
                   "(SELECT run_id FROM runs WHERE variant = ? LIMIT 1)")
        store.con.execute(best_on, ["test", other])
        assert deployed_variant(store) == chosen
        store.con.execute(best_on, ["val", other])
        assert deployed_variant(store).name == other
        # A static cell with another calibration competes too (its variant name carries the method).
        store.con.execute("UPDATE runs SET variant = variant || '-percentile' WHERE variant = ?", [other])
        assert deployed_variant(store).name == other
        store.con.execute("UPDATE runs SET variant = replace(variant, '-static', '-staticky') WHERE variant LIKE ?",
                          [f"{other}%"])
        assert deployed_variant(store) == chosen
        store.con.execute("DELETE FROM artifacts")  # no variant files known: a clear error, not a crash
        with pytest.raises(ModelError, match="no static int8 variant with its files"):
            deployed_variant(store)


def test_roc_and_reliability() -> None:
    labels = np.array([0, 1, 1, 0, 2])
    probs = np.eye(7)[[0, 1, 0, 0, 2]] * 0.7 + 0.3 / 7
    curves = roc_curves(labels, probs)
    assert set(curves) == {"mel", "nv", "bcc"}
    rel = reliability(labels, probs)
    assert rel["count"].sum() == 5 and rel["accuracy"].between(0, 1).all()


@pytest.fixture
def app_env(sweep_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LESIONLITE_DB", str(sweep_store))
    return sweep_store


def _run(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    return at


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_without_exceptions(app_env: Path, page: str) -> None:
    at = _run(page)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_filters_change_the_rows(app_env: Path) -> None:
    at = _run("views/runs.py")
    table = at.dataframe[0].value
    all_rows = len(table)
    text = [c for c in table.columns if pd.api.types.is_object_dtype(table[c])]
    assert not table.isin(["None", "nan"]).any().any() and not table[text].isna().any().any()
    with ResultsStore(app_env, read_only=True) as store:  # Δ in points, as every other page says it
        stored = variants_frame(store).set_index("run_id")["bal_acc_delta"]
    shown = table.set_index("run_id")["bal_acc_delta"].dropna()
    assert np.allclose(shown, stored.loc[shown.index] * 100)
    at.multiselect(key="f_quant").set_value(["static"]).run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 2 < all_rows


def _tradeoff_spec(at: AppTest) -> dict:
    """The Trade-offs chart's Vega-Lite spec as the page sent it, with its datasets (sent as Arrow) as rows."""
    import pyarrow as pa

    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    spec["datasets"] = {d.name: pa.ipc.open_stream(d.data.data).read_all().to_pylist() for d in chart.proto.datasets}
    return spec


def _legend_labels(spec: dict) -> dict[str, list]:
    """Each encoded channel's title -> the values in its scale's domain, over every layer."""
    labels: dict[str, list] = {}
    for layer in spec["layer"]:
        for channel in (c for c in layer["encoding"].values() if isinstance(c, dict)):  # tooltips are lists
            domain = channel.get("scale", {}).get("domain")
            if channel.get("title") and domain:
                labels.setdefault(channel["title"], []).extend(domain)
    return labels


def _layer_rows(spec: dict, layer: dict) -> list[dict]:
    return spec["datasets"][layer["data"]["name"]]


def test_tradeoffs_chart_has_points_frontier_and_baseline(app_env: Path) -> None:
    at = _run()
    spec = _tradeoff_spec(at)
    legends = _legend_labels(spec)
    assert "baseline: dense PyTorch eager" in legends["Marked"]  # both baselines marked
    assert "baseline: dense fp32 ONNX Runtime (ratios against this)" in legends["Marked"]  # the default, said so
    assert "served by the site (default)" in legends["Marked"]
    headline = next(h.value for h in at.header if "Recommend" in h.value or "No variant" in h.value)
    assert ("recommended (the headline)" in legends["Marked"]) == headline.startswith("Recommended")
    assert "static" in legends["Quantization (symbol)"]  # a legend for symbols; sizes for the pruning ratios
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point"
                  and "size" in layer["encoding"])
    assert points["encoding"]["size"]["legend"]["values"] == [0.0, 0.5]
    assert points["encoding"]["x"]["title"] == "Model size (MB, log scale)"
    assert any(layer["mark"]["type"] == "line" for layer in spec["layer"])  # the Pareto frontier
    # one series per way of making the model smaller (issue 19: the families side by side)
    series = [row["series"] for row in _layer_rows(spec, points)]
    assert series.count("test_efficientnet · dense") == series.count(
        "test_efficientnet · pruned (per-layer ratio)") == 3  # 3 modes each


def test_live_panel_predicts_a_synthetic_image(app_env: Path) -> None:
    at = _run("views/live_panel.py")
    with ResultsStore(app_env, read_only=True) as store:
        deployed = deployed_variant(store)
    chosen = at.multiselect(key="live_variants").value
    assert chosen[0].startswith(f"{deployed.name} · test_efficientnet (run …")  # the web app's default first
    assert len(chosen) == 2 and chosen[1].startswith("dense-torch_fp32 · ")  # the variant first: told apart
    at.radio(key="live_source").set_value("Synthetic example").run()
    assert not at.exception, [e.value for e in at.exception]
    said = next(m.value for m in at.markdown if "Agreement between variants" in m.value)
    tops = at.dataframe[0].value["prediction"]
    if tops.nunique() == 1:
        assert said == f"Agreement between variants: all 2 give **{tops.iloc[0]}**."
    else:  # each class named with the variants that gave it, not a percentage
        assert "they disagree" in said and all(t in said for t in tops) and "%" not in said
    assert any("Ground truth: **Melanoma** (mel)" in m.value for m in at.markdown)
    assert any("synthetic demo images" in w.value for w in at.warning)  # these test models never saw real skin
    assert any("int8 models do not provide" in c.value for c in at.caption)  # why the static variant has no CAM


def test_live_panel_predicts_a_real_sample(app_env: Path, samples_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESIONLITE_SAMPLES", str(samples_dir))
    at = _run("views/live_panel.py")
    at.radio(key="live_source").set_value("Sample image").run()
    assert not at.exception, [e.value for e in at.exception]
    summary = at.dataframe[0].value
    assert summary["prediction"].notna().all() and (summary["this image, ms (one run)"] > 0).all()
    # the site's screening decision beside each variant's answer (issue 20): group share, referral, advice
    assert summary["possibly malignant"].between(0, 1).all()
    assert set(summary["refer (operating point)"]) <= {"yes", "no", "no operating point"}
    assert summary["advice"].str.contains("dermatologist|watch").all()


def test_no_store_gives_a_friendly_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESIONLITE_DB", str(tmp_path / "absent.duckdb"))
    at = _run()
    assert not at.exception
    assert any("make demo" in i.value for i in at.info)


def test_tradeoffs_headline_recommends_within_the_budget(app_env: Path) -> None:
    at = _run()
    # only that warning (and, where the fixture sweep was timed on a busy machine, the noisy-timing one)
    assert not at.exception and all("Synthetic demo data" in w.value or w.value.startswith("Noisy timing")
                                    for w in at.warning)
    headline = next(h.value for h in at.header if "Recommend" in h.value or "No variant" in h.value)
    with ResultsStore(app_env, read_only=True) as store:
        eager = variants_frame(store)
    df = eager.assign(size_x=eager["size_x_onnx"], speed_x=eager["speed_x_onnx"])  # the default: vs fp32 ONNX
    pick = recommend(df, max_loss=0.01)
    assert headline == (f"Recommended: {pick.headline}" if pick else "No variant fits this budget")
    at.number_input(key="to_loss").set_value(50.0).run()
    loose = recommend(df, max_loss=0.5)
    assert f"Recommended: {loose.headline}" in [h.value for h in at.header]
    assert loose.size_x >= df[df["kind"] == "variant"]["size_x"].max() - 1e-9  # the smallest variant wins
    assert at.query_params["to_loss"] == "50.0"  # the view is in the address
    at.sidebar.radio(key="to_base").set_value("eager").run()  # the switch: ratios against PyTorch eager
    assert f"Recommended: {recommend(eager, max_loss=0.5).headline}" in [h.value for h in at.header]
    assert at.query_params["to_base"] == "eager"
    at.selectbox(key="to_runtime").set_value("pytorch").run()  # the headline asked for one runtime's files
    in_pytorch = eager[eager["runtime"] == "pytorch"]
    assert set(in_pytorch["quantization"]) == {"torch_fp32"} and len(in_pytorch) < len(eager)
    assert f"Recommended: {recommend(in_pytorch, max_loss=0.5).headline}" in [h.value for h in at.header]
    assert at.query_params["to_runtime"] == "pytorch"
    at.sidebar.multiselect(key="f_runtime").set_value(["onnxruntime"]).run()  # the sidebar filter: ONNX only
    assert not at.exception and at.selectbox(key="to_runtime").value == "any"  # pytorch is no longer offered


def test_recommend_rules() -> None:
    df = pd.DataFrame({"run_id": list("abcd"), "variant": ["dense-static", "pruned-0.5-static", "pruned-0.7-static",
                                                         "dense-torch_fp32"],
                       "model": "m", "kind": "variant", "size_mb": [4.0, 1.3, 0.7, 14.0],
                       "latency_ms": [2.7, 1.5, 1.0, 10.0], "size_x": [3.5, 10.8, 20.0, 1.0],
                       "speed_x": [3.7, 6.8, 10.0, 1.0], "balanced_accuracy": [0.733, 0.725, 0.52, 0.74],
                       "bal_acc_delta": [-0.007, -0.015, -0.22, 0.0]})
    assert recommend(df).variant == "dense-static"  # the smallest within 1 point
    assert recommend(df, max_loss=0.02).headline == ("pruned-0.5-static: 10.8x smaller, 6.8x faster, "
                                                     "balanced accuracy -1.5 pts")
    assert recommend(df, max_loss=0.5, max_size_mb=2.0).variant == "pruned-0.5-static"  # best accuracy in budget
    assert recommend(df, max_loss=0.0, max_latency_ms=2.0) is None


def test_a_shared_url_restores_the_view(app_env: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"f_quant": ["static", "fp32"], "f_ratio": "0.5", "to_x": "latency_ms",
                            "to_metric": "accuracy", "f_model": "no-such-model"})
    at.run()
    assert not at.exception
    assert at.multiselect(key="f_quant").value == ["static", "fp32"]
    assert at.multiselect(key="f_ratio").value == [0.5]
    assert at.multiselect(key="f_model").value == []  # gone from the store: dropped, not an error
    assert at.selectbox(key="to_x").value == "latency_ms" and at.selectbox(key="to_metric").value == "accuracy"
    assert at.query_params["to_x"] == "latency_ms"


def _run_detail(app_env: Path, *, split: str | None = None) -> tuple[AppTest, pd.Series]:
    """Run detail of the store's pruned-0.5-static variant, opened as a click on Runs opens it (the sidebar's
    Split set first when given)."""
    with ResultsStore(app_env, read_only=True) as store:
        df = variants_frame(store)
    variant = df[df["variant"] == "pruned-0.5-static"].iloc[0]
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["detail_id"] = variant["run_id"]
    at.run()
    if split:
        at.sidebar.selectbox(key="f_split").set_value(split).run()
    at.switch_page("views/run_detail.py").run()
    return at, variant


def test_run_detail_of_a_variant_shows_its_deployment_figures(app_env: Path) -> None:
    at, variant = _run_detail(app_env)
    assert not at.exception, [e.value for e in at.exception]
    cards = {m.label: m.value for m in at.metric}
    assert cards["size"] == f"{variant['size_mb']:.2f} MB" and "latency, batch 1" in cards and "MACs" in cards
    assert cards["Δ balanced accuracy"] == f"{variant['bal_acc_delta'] * 100:+.1f} pts"
    # issue 20: the screening ROC with the variant's operating point marked where it landed on this split
    screening = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                     if "Screening ROC" in json.loads(c.proto.spec)["layout"]["title"]["text"])
    names = [t.get("name", "") for t in screening["data"]]
    assert any(n.startswith("possibly malignant vs the rest (AUC") for n in names)
    point = next(t for t in screening["data"] if t.get("name", "").startswith("possibly malignant operating point"))
    assert point["y"][0] == pytest.approx(variant["triage_malignant_sensitivity"])


def test_the_recommendation_headline_carries_the_paired_interval(sweep_store: Path) -> None:
    from core.store.choosing import recommend
    from core.store.frames import variants_frame
    from core.store.results import ResultsStore

    with ResultsStore(sweep_store, read_only=True) as store:
        df = variants_frame(store)
    pick = recommend(df, max_loss=1.0)
    row = df.set_index("run_id").loc[pick.run_id]
    assert pick.headline.endswith(f"pts [{row['bal_acc_delta_ci_low'] * 100:+.1f}, "
                                  f"{row['bal_acc_delta_ci_high'] * 100:+.1f}]")


def test_compare_lists_each_variants_referral_sensitivity_and_specificity(app_env: Path) -> None:
    """Issue 20: the screening operating point's figures beside accuracy, size and speed."""
    at = _run("views/compare.py")
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    rows = set(table.index)
    assert {"referral sensitivity (possibly malignant)", "referral specificity (possibly malignant)",
            "referral sensitivity (melanoma)"} <= rows
    values = pd.to_numeric(table.loc["referral sensitivity (possibly malignant)"], errors="coerce")
    assert values.between(0, 1).all()


def test_log_axis_ticks_carry_their_value_and_unit(app_env: Path) -> None:
    """Issue 22: on the log size axis a 0.17 MB model sits near '0.2 MB', never near a bare '2'."""
    from dashboard.charts import log_ticks

    narrow = log_ticks([0.16, 0.2, 0.5], "MB")  # less than a decade: 1-2-5 alone gives two labels
    assert narrow[1] == ["0.15 MB", "0.2 MB", "0.3 MB", "0.4 MB", "0.5 MB", "0.7 MB"]
    assert log_ticks([0.17, 3.9, 13.6], "MB") == ([0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0],
                                                  ["0.2 MB", "0.5 MB", "1 MB", "2 MB", "5 MB", "10 MB", "20 MB"])
    at = _run()
    x = _tradeoff_spec(at)["layer"][-1]["encoding"]["x"]
    assert x["scale"]["type"] == "log" and x["axis"]["labelExpr"].endswith("' MB'")
    assert len(x["axis"]["values"]) >= 2
    at.selectbox(key="to_x").set_value("latency_ms").run()
    x = _tradeoff_spec(at)["layer"][-1]["encoding"]["x"]
    assert x["axis"]["labelExpr"].endswith("' ms'") and len(set(x["axis"]["values"])) == len(x["axis"]["values"])


def test_every_page_warns_when_the_store_holds_synthetic_demo_runs(app_env: Path) -> None:
    """Issue 22: not only Live test: Trade-offs, Runs, Run detail and Compare too."""
    for page in PAGES:
        at = _run(page)
        assert any("Synthetic demo data" in w.value for w in at.warning), page


def test_the_headline_gives_absolute_figures_flags_noisy_timing_and_marks_the_served_variant(app_env: Path) -> None:
    """Issue 22 item 3."""
    from core.store.choosing import Recommendation

    at = _run()
    assert not at.exception
    assert any("balanced accuracy 0." in m.value and "melanoma recall" in m.value and " MB, " in m.value
               and "ms per image (IQR" in m.value for m in at.markdown)
    assert any("The site serves `" in c.value for c in at.caption)
    spec = _tradeoff_spec(at)
    marked = next(layer for layer in spec["layer"] if "stroke" in layer["encoding"])
    assert [r["marked"] for r in _layer_rows(spec, marked)].count("served by the site (default)") == 1
    figures = dict(run_id="r", variant="v", model="m", size_x=2.0, speed_x=5.4, bal_acc_delta=0.0, rule="rule",
                   latency_ms=1.86)
    calm, noisy = Recommendation(**figures, latency_iqr_ms=0.2), Recommendation(**figures, latency_iqr_ms=8.33)
    assert not calm.noisy_timing and noisy.noisy_timing


def test_a_gate_fitted_while_the_dashboard_runs_is_used(gated_variant, tmp_path: Path) -> None:
    """Issue 22 item 5: the gate cache is keyed by the gate file's version, not only the folder."""
    import shutil

    from core.serve.ood import GATE_BACKBONE_FILE, GATE_FILE
    from dashboard import state

    source, _ = gated_variant
    folder = tmp_path / "variant"
    shutil.copytree(source, folder)
    gate_files = {name: (folder / name).read_bytes() for name in (GATE_FILE, GATE_BACKBONE_FILE)}
    for name in gate_files:
        (folder / name).unlink()
    assert state.deployed_model(str(folder)).gate is None
    for name, data in gate_files.items():
        (folder / name).write_bytes(data)
    assert state.deployed_model(str(folder)).gate is not None


def test_views_keep_their_settings_across_pages_and_links_carry_run_and_comparison(app_env: Path) -> None:
    """Issue 22 item 2: Trade-offs' axis and scale survive a visit to another page; Run detail's run and Compare's
    variants are in the address and a new session opened on it shows them."""
    at = _run()
    at.selectbox(key="to_x").set_value("latency_ms").run()
    at.toggle(key="to_log").set_value(False).run()
    at.switch_page("views/runs.py").run()
    at.switch_page("views/tradeoffs.py").run()
    assert at.selectbox(key="to_x").value == "latency_ms" and at.toggle(key="to_log").value is False
    assert at.query_params["to_x"] == "latency_ms"

    with ResultsStore(app_env, read_only=True) as store:
        ids = variants_frame(store).query("kind == 'variant'")["run_id"].tolist()
    at.switch_page("views/compare.py").run()
    at.multiselect(key="compare_pick").set_value(ids[:3]).run()
    at.switch_page("views/run_detail.py").run()
    at.selectbox(key="detail_run").set_value(ids[2]).run()
    assert at.query_params["detail_run"] == ids[2] and list(at.query_params["compare_pick"]) == ids[:3]

    shared = AppTest.from_file(APP, default_timeout=120)
    shared.query_params.update({"compare_pick": ids[:3], "detail_run": ids[2]})
    shared.run()
    shared.switch_page("views/compare.py").run()
    assert shared.multiselect(key="compare_pick").value == ids[:3]  # three, not the default two
    shared.switch_page("views/run_detail.py").run()
    assert shared.selectbox(key="detail_run").value == ids[2]


def test_labels_read_as_words_and_dragging_selects(app_env: Path) -> None:
    """Issue 22 items 6 and 7: dragging on the chart selects points; ratios below 1 read as 'larger'/'slower';
    metric cards say 'ROC-AUC (macro)', not 'auc macro ovr'; no Deploy button."""
    from core.store.choosing import ratio_text

    assert ratio_text(0.9, "smaller", "larger") == "1.1x larger"
    assert ratio_text(2.0, "smaller", "larger") == "2.0x smaller"
    at = _run()
    params = {p["name"]: p["select"]["type"] for p in _tradeoff_spec(at)["params"]}
    assert params == {"pick": "point", "box": "interval"}  # clicking picks, dragging selects a box
    with ResultsStore(app_env, read_only=True) as store:
        run = variants_frame(store).query("variant == 'pruned-0.5-static'").iloc[0]["run_id"]
    at.session_state["detail_id"] = run
    at.switch_page("views/run_detail.py").run()
    labels = {m.label for m in at.metric}
    assert {"ROC-AUC (macro)", "Cohen's kappa", "ECE"} <= labels and "auc macro ovr" not in labels
    assert 'toolbarMode = "viewer"' in (Path(APP).parent.parent / ".streamlit" / "config.toml").read_text()


def test_the_served_variant_keeps_its_parents_screening_and_says_why(sweep_store: Path, tmp_path: Path) -> None:
    """Issue 32: not balanced accuracy alone. A static cell that tells more melanomas "usually harmless" on
    validation than its dense parent's fp32 file, or refers fewer possibly-malignant lesions than the parent's
    interval allows, is passed over; the choice says why."""
    from core.store.choosing import deployed_choice

    db = tmp_path / "copy.duckdb"
    db.write_bytes(sweep_store.read_bytes())
    with ResultsStore(db) as store:
        def put(variant: str, name: str, value: float) -> None:
            run = store.query("SELECT run_id FROM runs WHERE variant = ? LIMIT 1", [variant])["run_id"].iloc[0]
            store.con.execute("DELETE FROM metrics WHERE run_id = ? AND split = 'val' AND name = ?", [run, name])
            store.con.execute("INSERT INTO metrics VALUES (?, 'val', ?, ?)", [run, name, value])

        first = deployed_choice(store)
        assert "balanced accuracy" in first.reason and "keep their dense model's screening" in first.reason
        put("dense-fp32", "advice_mel_watch_share", 0.05)
        put("dense-fp32", "triage_malignant_sensitivity_ci_low", 0.80)
        put(first.folder.name, "advice_mel_watch_share", 0.10)  # misses more melanomas than its parent
        second = deployed_choice(store)
        assert second.folder != first.folder
        for variant in (second.folder.name,):
            put(variant, "advice_mel_watch_share", 0.0)
            put(variant, "triage_malignant_sensitivity", 0.70)  # refers fewer than the parent's interval allows
        third = deployed_choice(store)
        # neither keeps it now: the one that tells the fewest melanomas "usually harmless", and the reason says so
        assert third.folder == second.folder and "no int8 file keeps" in third.reason


def test_no_fit_names_the_limit_that_excluded_the_variants_and_the_closest() -> None:
    import pandas as pd

    from core.store.choosing import no_fit_reason

    df = pd.DataFrame({"kind": "variant", "variant": ["a-static", "b-static", "c-fp32"],
                       "size_mb": [0.16, 0.20, 0.50], "latency_ms": [2.0, 2.5, 4.0],
                       "bal_acc_delta": [-0.03, -0.02, -0.005], "size_x": 1.0, "speed_x": 1.0})
    assert recommend(df, max_loss=0.01, max_size_mb=0.2) is None
    said = no_fit_reason(df, max_loss=0.01, max_size_mb=0.2)
    assert said.startswith("2 variant(s) fit 0.2 MB, but the 1-point loss limit excludes them all")
    assert "the closest, b-static (0.20 MB, 2.50 ms), loses 2.0 points" in said
    said = no_fit_reason(df, max_loss=0.01, max_size_mb=0.1)
    assert said.startswith("No variant is within 0.1 MB and the 1-point loss limit: the smallest within the limit "
                           "is c-fp32 (0.50 MB")
    assert no_fit_reason(df, max_loss=0.001).startswith("3 variant(s) are shown, but the 0.1-point loss limit")
    # A sweep without the chosen baseline's cell has no ratios: the loss limit is not what excluded them
    no_ratios = df.assign(size_x=float("nan"), speed_x=float("nan"), bal_acc_delta=0.003)
    assert recommend(no_ratios, max_loss=0.01) is None
    assert "no cell of that baseline" in no_fit_reason(no_ratios, max_loss=0.01)


def test_tradeoffs_says_why_no_variant_fits(app_env: Path) -> None:
    at = _run()
    at.number_input(key="to_size").set_value(0.001).run()
    assert "No variant fits this budget" in [h.value for h in at.header]
    assert any(c.value.startswith("No variant is within 0.001 MB") and "the smallest" in c.value
               for c in at.caption)


def test_agreement_is_said_in_words() -> None:
    from core.serve.predict import Prediction
    from dashboard.wording import agreement_sentence

    def said(label: str, top: int) -> Prediction:
        probs = np.full(7, 0.05)
        probs[top] = 0.7
        return Prediction(label, probs, 1.0)

    a, b = said("dense-static · m (run …ab12)", 0), said("dense-torch_fp32 · m (run …ab12)", 1)
    assert agreement_sentence([a, said("x · m", 0)]) == "Agreement between variants: all 2 give **Melanoma**."
    assert agreement_sentence([a, b]) == ("Agreement between variants: **they disagree** on the top class: "
                                          "Melanoma (dense-static); Melanocytic nevus (dense-torch_fp32).")


def test_run_detail_follows_the_sidebar_split_and_names_runs_once(app_env: Path) -> None:
    at, variant = _run_detail(app_env, split="val")
    assert not at.exception, [e.value for e in at.exception]
    assert at.query_params["f_split"] == "val"  # one Split, in the address, on every page
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any(t.startswith("Screening ROC (val)") for t in titles)
    assert not [r for r in at.radio if r.label == "Split"]  # no second switch that could disagree
    label = at.selectbox(key="detail_run").format_func(variant["run_id"])
    assert "nan" not in label and variant["run_id"] not in label  # "trained (…nan) (id)" before


def test_short_names_of_trained_runs_carry_their_own_id_tail() -> None:
    import pandas as pd

    from dashboard.wording import short_names

    df = pd.DataFrame({"run_id": ["20261204-1932", "20261204-1932.p0.static", "20261205-1932"],
                       "variant": ["trained", "dense-static", "trained"], "model": "m",
                       "parent_run_id": [np.nan, "20261204-1932", None]})
    names = short_names(df)
    assert names["20261204-1932.p0.static"] == "dense-static (…1932)"
    assert names["20261204-1932"] == "trained (…1932) 20261204-1932"  # the same label twice: the ids tell apart
    assert "nan" not in "".join(names.values())


def test_compare_says_differences_and_ratios_in_the_dashboards_words(app_env: Path) -> None:
    at = _run("views/compare.py")
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert all(re.fullmatch(r"[+-]\d+\.\d pts|", v) for v in table.loc["Δ balanced accuracy vs dense"])  # not 0.035
    assert all(re.fullmatch(r"\d+\.\dx (smaller|larger)|—|", v) for v in table.loc["smaller (x)"])
    assert all(re.fullmatch(r"\d+\.\dx (faster|slower)|—|", v) for v in table.loc["faster (x)"])
    assert not any(v == "nan" for v in table.to_numpy().ravel())
    for warning in at.warning:  # a melanoma drop names the variant it belongs to
        if "melanoma recall drops" in warning.value:
            assert re.match(r".+ \(….{4}\): melanoma recall drops by \d+\.\d points", warning.value)


def test_one_ratio_baseline_for_every_page_in_the_url(app_env: Path) -> None:
    from core.store.choosing import ratio_text

    with ResultsStore(app_env, read_only=True) as store:
        frame = variants_frame(store).set_index("run_id")
    at = _run("views/runs.py")
    assert not at.exception, [e.value for e in at.exception]
    shown = at.dataframe[0].value.set_index("run_id")["size_x"]
    onnx = frame.loc[shown.index, "size_x_onnx"].map(lambda r: ratio_text(r, "smaller", "larger"))
    assert (shown == onnx).all()  # the default, as on Trade-offs: against the fp32 ONNX file
    assert any("against the dense fp32 ONNX Runtime cell" in c.value for c in at.caption)
    at.sidebar.radio(key="to_base").set_value("eager").run()
    shown = at.dataframe[0].value.set_index("run_id")["size_x"]
    eager = frame.loc[shown.index, "size_x"].map(lambda r: ratio_text(r, "smaller", "larger"))
    assert (shown == eager).all() and at.query_params["to_base"] == "eager"
    assert any("against the dense PyTorch eager cell" in c.value for c in at.caption)
    at.switch_page("views/compare.py").run()  # the choice follows to the next page
    assert at.sidebar.radio(key="to_base").value == "eager"
    assert any("Ratios against the dense PyTorch eager cell" in c.value for c in at.caption)


def test_run_detail_charts_read_right(app_env: Path) -> None:
    at, _ = _run_detail(app_env)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    legends = [s["layout"].get("legend", {}).get("title", {}).get("text") for s in specs]
    assert "figure" not in legends  # every legend says what its colours are
    screening = next(s for s in specs if s["layout"]["title"]["text"].startswith("Screening ROC"))
    curves = {t["name"].split(" vs the rest")[0]: t["line"]["color"] for t in screening["data"]
              if " vs the rest" in t.get("name", "")}
    for point in (t for t in screening["data"] if "operating point" in t.get("name", "")):
        assert point["marker"]["color"] == curves[point["name"].split(" operating point")[0]]  # its curve's colour
    reliability = next(s for s in specs if s["layout"]["title"]["text"].startswith("Reliability"))
    labelled = [t for t in reliability["data"] if "text" in t.get("mode", "")]
    assert len(labelled) <= 1  # bin counts printed for one curve only: they no longer overlap


@pytest.mark.slow  # each page loads the real release: 10-15 s
@committed
@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_the_committed_release(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make dashboard` on a fresh clone: the release's store rows, installed, are real trade-offs to show."""
    from core.jobs.release import install_release
    copy = fresh_copy(tmp_path)
    install_release(copy)
    monkeypatch.setenv("LESIONLITE_DB", str(copy / "results.duckdb"))
    at = _run(page)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert not any("synthetic" in w.value for w in at.warning)


def test_every_quantization_mode_has_a_shape_of_its_own() -> None:
    from core.compress.modes import MODES
    from dashboard.tradeoff_chart import quant_shape

    assert len({quant_shape(m) for m in MODES}) == len(MODES)


def test_a_dragged_box_or_clicks_select_the_points_inside() -> None:
    from dashboard.tradeoff_chart import selected_run_ids

    points = pd.DataFrame({"run_id": ["a", "b", "c"], "size_mb": [1.0, 2.0, 4.0],
                           "balanced_accuracy": [0.6, 0.7, 0.8]})
    box = {"box": {"size_mb": [1.5, 5.0], "balanced_accuracy": [0.85, 0.65]}}  # ends in any order
    assert selected_run_ids(box, points, x="size_mb", metric="balanced_accuracy") == ["b", "c"]
    clicked = {"pick": [{"run_id": "a"}], **box}
    assert selected_run_ids(clicked, points, x="size_mb", metric="balanced_accuracy") == ["a", "b", "c"]
    assert selected_run_ids({}, points, x="size_mb", metric="balanced_accuracy") == []


@pytest.mark.slow
@committed
def test_the_live_panel_fuses_what_is_said_about_the_person_with_the_committed_release(
        tmp_path: Path, samples_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The release carries metadata fusion: the panel asks age, sex and body site (optional), and the variants
    that fuse say which fields they used; without any, nothing is used."""
    from core.jobs.release import install_release

    copy = fresh_copy(tmp_path)
    install_release(copy)
    monkeypatch.setenv("LESIONLITE_DB", str(copy / "results.duckdb"))
    monkeypatch.setenv("LESIONLITE_SAMPLES", str(samples_dir))
    at = _run("views/live_panel.py")
    at.radio(key="live_source").set_value("Sample image").run()
    assert not at.exception, [e.value for e in at.exception]
    assert set(at.dataframe[0].value["metadata used"]) == {"none"}
    at.number_input(key="live_age").set_value(70).run()
    at.selectbox(key="live_site").set_value("back").run()
    assert not at.exception, [e.value for e in at.exception]
    used = at.dataframe[0].value.set_index("variant")["metadata used"]
    served = next(label for label in used.index if label.startswith("dense-static"))
    assert used[served] == "age, localization"
