"""The command-line scripts: one-line errors for bad input, evaluation on any folder, the pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from core.classes import CLASSES, ISIC_COLUMNS
from core.cli import run_cli
from core.data.layout import HAM_METADATA
from core.store.results import ResultsStore
from scripts import evaluate as evaluate_cli
from scripts import pipeline as pipeline_cli
from scripts import train as train_cli

TINY = ["--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--epochs", "1", "--batch-size", "16",
        "--workers", "0", "--threads", "1"]


def _run(module, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_cli(module.main, module.get_args_parser(), argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _outputs(tmp_path: Path) -> list[str]:
    return ["--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "models"),
            "--db", str(tmp_path / "r.duckdb")]


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    code, _, err = _run(train_cli, [*TINY, "--data-dir", str(tmp_path / "data"), *_outputs(tmp_path)], capsys)
    _one_line_error(code, err, "no label table found", HAM_METADATA)


def test_corrupt_jpeg(synthetic_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = sorted(synthetic_copy.rglob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    code, _, err = _run(train_cli, [*TINY, "--data-dir", str(synthetic_copy), *_outputs(tmp_path)], capsys)
    _one_line_error(code, err, "1 unreadable image(s)", victim.stem, "--skip-bad")
    assert not (tmp_path / "r.duckdb").exists()


def test_unknown_label(synthetic_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = pd.read_csv(synthetic_copy / HAM_METADATA)
    meta.loc[0, "dx"] = "seborrheic"
    meta.to_csv(synthetic_copy / HAM_METADATA, index=False)
    code, _, err = _run(train_cli, [*TINY, "--data-dir", str(synthetic_copy), *_outputs(tmp_path)], capsys)
    _one_line_error(code, err, "unknown dx label(s) 'seborrheic'", "allowed: mel, nv")


def test_empty_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / HAM_METADATA).write_text("lesion_id,image_id,dx,dx_type,age,sex,localization\n")
    code, _, err = _run(train_cli, [*TINY, "--data-dir", str(tmp_path / "data"), *_outputs(tmp_path)], capsys)
    _one_line_error(code, err, "the dataset is empty")


def test_unknown_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.yaml").write_text("learning_rate: 0.1\n")
    code, _, err = _run(train_cli, ["-c", str(tmp_path / "c.yaml")], capsys)
    _one_line_error(code, err, "unknown config key(s) learning_rate", "allowed:")


def test_unknown_model_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.yaml").write_text("model: vgg16\n")
    code, _, err = _run(train_cli, ["-c", str(tmp_path / "c.yaml")], capsys)
    _one_line_error(code, err, "model: 'vgg16' is not allowed", "resnet50")


def test_unknown_model_flag_is_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        train_cli.get_args_parser().parse_args(["--model", "vgg16"])
    assert exc.value.code == 2
    assert "invalid choice: 'vgg16'" in capsys.readouterr().err


@pytest.mark.slow  # starts processes or trains
def test_pipeline_then_evaluate_on_ham_and_isic_layouts(synthetic_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"ratios: [0.0, 0.5]\nmodes: [fp32]\nfinetune_epochs: 1\nlatency_runs: 2\nthreads: 1\n"
                     f"variants_dir: {tmp_path / 'variants'}\n")
    code, out, err = _run(pipeline_cli, [*TINY, "--data-dir", str(synthetic_root), *_outputs(tmp_path),
                                         "--sweep", str(sweep)], capsys)
    assert code == 0, err
    assert "balanced_accuracy" in out and "test" in out and "val" in out
    assert "dense-fp32" in out and "pruned-0.5-fp32" in out  # the sweep's table
    assert f"{tmp_path / 'variants'}" in out and "pruned-0.5-fp32\n" in out  # the variant folders are listed
    assert "onnxscript" not in err  # third-party export chatter is quiet by default
    run_id = next((tmp_path / "models").iterdir()).name

    # HAM10000 layout, with an ISIC submission file.
    sub = tmp_path / "sub.csv"
    args = ["--model", run_id, "--models-dir", str(tmp_path / "models"), "--data", str(synthetic_root),
            "--db", str(tmp_path / "r.duckdb"), "--cache-dir", str(tmp_path / "cache"), "--submission", str(sub)]
    code, out, err = _run(evaluate_cli, args, capsys)
    assert code == 0, err
    assert "balanced_accuracy=" in out
    assert list(pd.read_csv(sub).columns) == ["image", *ISIC_COLUMNS]

    # ISIC 2018 Task 3 layout: ground-truth CSV + images.
    isic = tmp_path / "isic"
    shutil.copytree(synthetic_root, isic)
    meta = pd.read_csv(isic / HAM_METADATA)
    (isic / HAM_METADATA).unlink()
    gt = pd.DataFrame({"image": meta["image_id"], **{c.upper(): (meta["dx"] == c).astype(float) for c in CLASSES}})
    gt.to_csv(isic / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    args[args.index(str(synthetic_root))] = str(isic)
    code, out, err = _run(evaluate_cli, args, capsys)
    assert code == 0, err

    with ResultsStore(tmp_path / "r.duckdb", read_only=True) as store:
        runs = store.runs()
        assert (runs["kind"] == "variant").sum() == 2
        evals = runs[runs["kind"] == "eval"]
        assert len(evals) == 2 and (evals["parent_run_id"] == run_id).all()
        assert evals["dataset_fingerprint"].nunique() == 1  # same images, same labels: same fingerprint


def test_evaluate_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(evaluate_cli, ["--model", "nope", "--models-dir", str(tmp_path), "--data", str(tmp_path)],
                        capsys)
    _one_line_error(code, err, "no trained model at 'nope'")


@pytest.mark.slow
def test_workdir_keeps_every_output_in_one_folder(synthetic_root: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("ratios: [0.0]\nmodes: [fp32]\nunstructured: []\nlatency_runs: 2\nthreads: 1\n")
    work = tmp_path / "work"
    code, out, err = _run(pipeline_cli, [*TINY, "--data-dir", str(synthetic_root), "--workdir", str(work),
                                         "--sweep", str(sweep)], capsys)
    assert code == 0, err
    assert sorted(p.name for p in work.iterdir()) == ["cache", "models", "results.duckdb", "variants"]
    run_id = next((work / "models").iterdir()).name
    assert (work / "variants" / run_id / "dense-fp32" / "card.json").is_file()
    assert f"results store: {work / 'results.duckdb'}" in out
    assert f"streamlit run dashboard/app.py -- --db {work / 'results.duckdb'}" in out  # how to look at it
    with ResultsStore(work / "results.duckdb", read_only=True) as store:
        assert sorted(store.runs()["variant"]) == ["dense-fp32", "trained"]  # one name each


def test_workdir_takes_the_generated_synthetic_data_too(tmp_path: Path) -> None:
    """Issue 22 item 16: --workdir with the synthetic default generates the data under the workdir, not ./data."""
    from core.train.config import TrainConfig
    from scripts.pipeline import synthetic_data_dir

    assert synthetic_data_dir(TrainConfig(synthetic=True), str(tmp_path)) == {"data_dir": str(tmp_path / "synthetic")}
    assert synthetic_data_dir(TrainConfig(synthetic=True, data_dir="mine"), str(tmp_path)) == {}
    assert synthetic_data_dir(TrainConfig(synthetic=True), None) == {}
