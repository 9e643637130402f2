"""Phone formats (core.compress.mobile): each exported from a tiny model, run back by its own runtime, compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.artifacts.mobile_runtimes import MobileRunner, runtime_of
from core.artifacts.onnx_runtime import ort_logits, ort_session
from core.compress.export import export_onnx
from core.compress.mobile import OPERATORS_FILE, export_mobile
from core.compress.modes import MODES
from core.compress.quantize import quantize_onnx
from core.errors import ConfigError, ModelError
from core.models import create_model

SIZE = 64


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("test_efficientnet", pretrained=False, num_classes=7).eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(12, 3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def onnx_files(tiny: torch.nn.Module, images: np.ndarray, tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    export_onnx(tiny, folder / "fp32.onnx", input_size=SIZE)
    quantize_onnx(folder / "fp32.onnx", folder / "static.onnx", mode="static", calibration=images)
    return {"fp32": folder / "fp32.onnx", "static": folder / "static.onnx"}


@pytest.mark.slow  # builds each phone runtime's file: 8-17 s a format
@pytest.mark.parametrize("mode", [m.name for m in MODES.values() if m.phone])
def test_each_phone_format_runs_back_in_its_runtime_and_agrees_with_its_source(
        mode: str, tiny: torch.nn.Module, images: np.ndarray, onnx_files: dict[str, Path], tmp_path: Path) -> None:
    path = export_mobile(mode, tmp_path / f"model{MODES[mode].suffix}", model=tiny, onnx_file=onnx_files.__getitem__,
                         input_size=SIZE, calibration=images)
    got = MobileRunner(path, threads=1).logits(images)
    if MODES[mode].source == "static":  # the static ONNX file in ONNX Runtime itself
        want = ort_logits(ort_session(onnx_files["static"]), images)
    else:
        with torch.inference_mode():
            want = tiny(torch.from_numpy(images)).numpy()
    assert got.shape == want.shape == (len(images), 7)
    if mode.endswith("fp32"):
        assert np.abs(got - want).max() < 1e-3
    elif mode == "ort_static":
        assert np.abs(got - want).max() < 1e-4  # the same int8 graph, only stored differently
    else:  # int8 against fp32: close, not equal (an untrained net's logits are small; scale by their spread)
        assert np.abs(got - want).max() < 0.25 * np.abs(want).max() + 0.05
    if MODES[mode].suffix == ".ort":  # the operator list a reduced ONNX Runtime build needs
        assert "ai.onnx;" in path.with_name(OPERATORS_FILE).read_text()


def test_damaged_or_unknown_mobile_files_are_clear_errors(tmp_path: Path) -> None:
    for suffix in (".ort", ".pte", ".tflite"):
        damaged = tmp_path / f"model{suffix}"
        damaged.write_bytes(b"not a model" * 10)
        with pytest.raises(ModelError, match=f"{runtime_of(damaged)} cannot load it"):
            MobileRunner(damaged)
    with pytest.raises(ModelError, match=r"known: \.ort, \.pte, \.tflite"):
        MobileRunner(tmp_path / "model.mlmodel")
    with pytest.raises(ModelError, match="missing"):
        MobileRunner(tmp_path / "absent.pte")
    with pytest.raises(ConfigError, match="unknown quantization mode 'pte_fp16'; allowed: torch_fp32, fp32"):
        export_mobile("pte_fp16", tmp_path / "x.pte", model=torch.nn.Identity(), onnx_file=Path,
                      input_size=SIZE, calibration=None)
    with pytest.raises(ModelError, match="'static' is not a phone mode"):
        export_mobile("static", tmp_path / "x.pte", model=torch.nn.Identity(), onnx_file=Path,
                      input_size=SIZE, calibration=None)


def test_ort_styles_bench_times_every_style_of_the_same_model(onnx_files: dict[str, Path],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import run_cli
    from scripts import bench_ort_styles

    args = ["--onnx", str(onnx_files["fp32"]), "--rounds", "1", "--runs", "2", "--threads", "1"]
    assert run_cli(bench_ort_styles.main, bench_ort_styles.get_args_parser(), args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("onnx (", "ort "))]
    assert len(rows) == 6  # .onnx at two levels, .ort fixed / runtime for ARM and for amd64
    assert all(float(row.split()[-1]) < 1e-3 for row in rows)  # the same model in every file
