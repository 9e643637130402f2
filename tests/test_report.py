"""The full-study report: every stored variant in its table, the plots, the side-by-side with the original study."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.cli import run_cli
from core.store.frames import variants_frame
from core.store.report import write_report
from core.store.results import ResultsStore
from scripts import report as report_cli


def test_report_lists_every_variant_with_plots(sweep_store: Path, tmp_path: Path) -> None:
    with ResultsStore(sweep_store, read_only=True) as store:
        report = write_report(store, tmp_path)
        variants = variants_frame(store)
    variants = variants[variants["kind"] == "variant"]
    text = report.markdown.read_text()
    for name in variants["variant"]:
        assert f"| {name} |" in text
    assert "| accuracy after dynamic quantization | 98.6%" in text and "lesion-grouped split" in text
    assert "Δ mel recall" in text and ("Melanoma recall falls most" in text or "No variant loses melanoma" in text)
    assert len(report.plots) == 2 * variants["parent_run_id"].nunique()
    for plot in report.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({plot.relative_to(tmp_path)})" in text
    static = variants[variants["variant"] == "pruned-0.5-static"].iloc[0]
    assert f"| {static['size_x']:.1f}x |" in text  # figures are the stored ones
    # ratios against the deployable baseline too: the dense fp32 ONNX cell of the same sweep
    onnx = variants[variants["variant"] == "dense-fp32"].iloc[0]
    assert onnx["size_x_onnx"] == onnx["speed_x_onnx"] == 1.0
    assert static["size_x_onnx"] == pytest.approx(onnx["size_mb"] / static["size_mb"])
    assert f"| {static['speed_x_onnx']:.1f}x |" in text and "faster vs ONNX" in text
    # intervals: balanced accuracy and the paired Δ carry theirs, as stored
    assert (f"{static['balanced_accuracy']:.3f} [{static['balanced_accuracy_ci_low']:.3f}, "
            f"{static['balanced_accuracy_ci_high']:.3f}]") in text
    assert (f"{static['bal_acc_delta'] * 100:+.1f} pts [{static['bal_acc_delta_ci_low'] * 100:+.1f}, "
            f"{static['bal_acc_delta_ci_high'] * 100:+.1f}]") in text


def test_report_cli_on_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ResultsStore(tmp_path / "empty.duckdb"):
        pass
    code = run_cli(report_cli.main, report_cli.get_args_parser(), ["--db", str(tmp_path / "empty.duckdb"),
                                                                   "--out", str(tmp_path)])
    assert code == 2 and "no measured variants" in capsys.readouterr().err


def test_the_budget_table_picks_each_familys_cell_on_validation_not_test() -> None:
    """Issue 19's Pareto table: per MAC level and family, the cell chosen on validation, shown with test figures."""
    import pandas as pd

    from core.store.choosing import frontier_by_budget

    rows = [  # variant, family, quantization, macs_kept, test bal acc, val bal acc
        ("dense-fp32", "dense", "fp32", None, 0.70, 0.70),
        ("dense-torch_fp32", "dense", "torch_fp32", None, 0.70, 0.70),  # not deployable: left out
        ("macs-0.5-fp32", "pruned after training", "fp32", 0.49, 0.60, 0.69),
        ("macs-0.5-static", "pruned after training", "static", 0.49, 0.68, 0.61),  # best on test, not on val
        ("ptt-0.5-fp32", "pruned, then trained", "fp32", 0.51, 0.65, 0.66),
        ("res-128-fp32", "lower resolution", "fp32", 0.64, 0.66, 0.67),
        ("pruned-0.5-fp32", "pruned (per-layer ratio)", "fp32", None, 0.5, 0.5),  # no MAC count: left out
    ]
    frame = pd.DataFrame(rows, columns=["variant", "family", "quantization", "macs_kept", "balanced_accuracy", "val"])
    frame["run_id"], frame["parent_run_id"], frame["kind"] = frame["variant"], "p", "variant"
    val = frame.assign(balanced_accuracy=frame["val"])
    table = frontier_by_budget(frame, val)
    assert table[["macs_level", "family", "variant"]].values.tolist() == [
        [1.0, "dense", "dense-fp32"], [0.65, "lower resolution", "res-128-fp32"],
        [0.5, "pruned after training", "macs-0.5-fp32"], [0.5, "pruned, then trained", "ptt-0.5-fp32"]]
    assert table.set_index("variant").loc["macs-0.5-fp32", "balanced_accuracy"] == 0.60  # test figure shown


def test_the_runtime_table_sets_each_file_beside_its_own_runtimes_dense_fp32() -> None:
    from core.store.report import runtime_table

    df = pd.DataFrame({"variant": ["dense-torch_fp32", "dense-fp32", "dense-static", "dense-pte_fp32",
                                   "dense-pte_int8", "macs-0.5-pte_int8"],
                       "runtime": ["pytorch", "onnxruntime", "onnxruntime", "executorch-xnnpack",
                                   "executorch-xnnpack", "executorch-xnnpack"],
                       "size_mb": [14.0, 13.6, 3.9, 13.5, 3.6, 1.8], "latency_ms": [40.0, 4.0, 4.2, 6.0, 3.0, 1.5],
                       "pruning_ratio": [0.0, 0.0, 0.0, 0.0, 0.0, 0.5]})
    table = runtime_table(df).set_index("variant")
    assert table.loc["dense-pte_int8", "size_x_runtime"] == pytest.approx(13.5 / 3.6)
    assert table.loc["macs-0.5-pte_int8", "speed_x_runtime"] == pytest.approx(6.0 / 1.5)
    assert table.loc["dense-static", "speed_x_runtime"] == pytest.approx(4.0 / 4.2)  # ONNX Runtime's own fp32
    assert table.loc["dense-torch_fp32", "size_x_runtime"] == pytest.approx(1.0)
    assert list(table["runtime"]) == sorted(table["runtime"])  # grouped by runtime


def test_a_plot_with_more_modes_than_markers(tmp_path: Path) -> None:
    from core.store.report import pareto_plot

    modes = [f"mode{i}" for i in range(14)]  # every quantization mode and phone format of one parent
    df = pd.DataFrame({"quantization": modes, "size_mb": [1.0 + i for i in range(14)],
                       "balanced_accuracy": [0.5 + i / 100 for i in range(14)], "pruning_ratio": 0.0})
    assert pareto_plot(df, x="size_mb", title="t", path=tmp_path / "p.png").is_file()
