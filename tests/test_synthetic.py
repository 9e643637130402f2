"""The embedded synthetic dataset: HAM10000 layout, imbalance, lesions, and learnable-but-not-trivial."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.data.layout import HAM_METADATA, load_table
from core.data.synthetic import ensure_synthetic_dataset, generate_synthetic_dataset
from core.errors import DatasetError


def test_layout_imbalance_and_lesions(synthetic_root: Path) -> None:
    df = load_table(synthetic_root)
    counts = df["dx"].value_counts()
    assert counts.index[0] == "nv" and counts["nv"] / len(df) > 0.4  # imbalanced like HAM10000
    assert set(counts.index) == {"mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"}
    per_lesion = df.groupby("lesion_id").size()
    assert per_lesion.max() > 1 and len(per_lesion) < len(df)  # several images per lesion
    assert {"dx_type", "age", "sex", "localization"} <= set(df.columns)


def test_deterministic(tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path / "a", num_images=100, width=48, height=36, seed=5, min_lesions_per_class=3)
    generate_synthetic_dataset(tmp_path / "b", num_images=100, width=48, height=36, seed=5, min_lesions_per_class=3)
    assert (tmp_path / "a" / HAM_METADATA).read_bytes() == (tmp_path / "b" / HAM_METADATA).read_bytes()
    a = sorted((tmp_path / "a").rglob("*.jpg"))[3]
    assert a.read_bytes() == (tmp_path / "b" / a.relative_to(tmp_path / "a")).read_bytes()


def test_ensure_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("user data")
    with pytest.raises(DatasetError, match="not a synthetic dataset"):
        ensure_synthetic_dataset(tmp_path, num_images=50)
    assert (tmp_path / "precious.txt").exists()


@pytest.mark.slow
def test_small_cnn_learns_it_above_chance_but_not_perfectly(tmp_path: Path) -> None:
    from core.jobs.train import run_training
    from core.train.config import TrainConfig

    cfg = TrainConfig(data_dir=str(tmp_path / "data"), synthetic=True, synthetic_images=900, model="test_resnet",
                      pretrained=False, img_size=64, epochs=8, batch_size=32, lr=3e-3, patience=0, workers=0,
                      threads=2, cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "models"),
                      db=str(tmp_path / "r.duckdb"))
    result = run_training(cfg)
    test = result.evaluations["test"].metrics
    chance = 1 / 7
    assert test["balanced_accuracy"] > 2 * chance, f"not learnable: {test}"
    assert test["accuracy"] < 0.99 and test["balanced_accuracy"] < 0.99, f"trivial: {test}"
