"""The mode registry: one record per quantization or phone mode, asked by everything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.compress.modes import MODES, RUNTIMES, Mode, mode_of, runtime_of_mode
from core.errors import ConfigError
from core.jobs.sweep import SweepConfig, run_sweep
from core.jobs.train import TrainResult
from core.store.frames import variants_frame
from core.store.report import write_report
from core.store.results import ResultsStore

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def test_every_mode_is_consistent() -> None:
    for mode in MODES.values():
        assert mode.runtime in RUNTIMES
        assert (mode.route == "onnx") == bool(mode.onnx_quantize)
        assert (mode.route == "ort") == (mode.source in MODES)
        assert mode.deployable <= (mode.suffix == ".onnx")  # the site serves ONNX files
        assert mode.phone == (mode.suffix in (".ort", ".pte", ".tflite"))
    assert [m for m in MODES if MODES[m].calibrated] == ["static", "ort_static", "pte_int8", "tflite_int8"]
    assert mode_of("static-keepdw-percentile") is MODES["static"]
    assert runtime_of_mode("pte_int8") == "executorch-xnnpack"
    with pytest.raises(ConfigError, match="unknown quantization mode 'int4'; allowed: torch_fp32, fp32, dynamic"):
        mode_of("int4")
    with pytest.raises(ConfigError, match=r"unknown route \(mode x\) 'magic'; allowed: torch, onnx, qat"):
        Mode(name="x", description="", suffix=".onnx", runtime="onnxruntime", route="magic")


def test_a_planted_mode_is_one_entry_and_shows_in_the_sweep_store_report_and_dashboard(
        trained_tiny: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = Mode(name="planted8", description="planted by this test: dynamic int8 under another name",
                   suffix=".onnx", runtime="onnxruntime", route="onnx", onnx_quantize="dynamic", bits=8,
                   deployable=True)
    monkeypatch.setitem(MODES, planted.name, planted)  # the one place a mode is added
    cfg = SweepConfig(train_config=str(trained_tiny.run_dir / "config.yaml"), models=["test_efficientnet"],
                      parents=[f"test_efficientnet={trained_tiny.run_dir}"], ratios=[0.0], unstructured=[],
                      modes=["torch_fp32", "fp32", "planted8"], calibration_images=16, latency_runs=3, threads=1,
                      variants_dir=str(tmp_path / "variants"), db=str(tmp_path / "sweep.duckdb"))
    summary = run_sweep(cfg)
    assert "dense-planted8" in set(summary["variant"])  # the sweep made and measured it
    assert (Path(cfg.variants_dir) / trained_tiny.run_id / "dense-planted8" / "model.onnx").is_file()

    with ResultsStore(cfg.db, read_only=True) as store:  # the store
        test = variants_frame(store)
        report = write_report(store, tmp_path / "report").markdown.read_text()
    row = test.set_index("variant").loc["dense-planted8"]
    assert row["quantization"] == "planted8" and row["runtime"] == "onnxruntime" and row["size_x"] > 1
    assert "dense-planted8" in report  # the report

    monkeypatch.setenv("LESIONLITE_DB", cfg.db)  # the dashboard: a shape on the chart, an option in the filter
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/tradeoffs.py")
    at.run()
    assert not at.exception and not at.error
    assert "planted8" in json.dumps(json.loads(at.get("vega_lite_chart")[0].proto.spec))
    assert "planted8" in at.multiselect(key="f_quant").options
