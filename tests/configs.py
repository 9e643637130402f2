"""Small configurations several test modules share (a test module never imports another)."""

from __future__ import annotations

from pathlib import Path

from core.jobs.sweep import SweepConfig
from core.jobs.train import TrainResult
from core.train.config import TrainConfig

# the original study's architectures
STUDY = ("efficientnet_b0", "efficientnet_b4", "resnet50", "densenet169", "mobilenetv3_large_100")


def tiny_config(data: Path, tmp_path: Path, **kw: object) -> TrainConfig:
    """Two epochs of a tiny ResNet at 32 px, one thread, everything under ``tmp_path``."""
    base = dict(data_dir=str(data), model="test_resnet", pretrained=False, img_size=32, epochs=2, batch_size=16,
                lr=3e-3, workers=0, threads=1, patience=0, cache_dir=str(tmp_path / "cache"),
                output_dir=str(tmp_path / "models"), db=str(tmp_path / "results.duckdb"))
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def sweep_config(trained: TrainResult, tmp_path: Path, **kw: object) -> SweepConfig:
    """A sweep over a trained tiny parent: two ratios, three modes, one unstructured cell, fast settings."""
    base = dict(train_config=str(trained.run_dir / "config.yaml"), models=["test_efficientnet"],
                parents=[f"test_efficientnet={trained.run_dir}"], ratios=[0.0, 0.5],
                modes=["torch_fp32", "fp32", "static"], unstructured=[0.5], finetune_epochs=1,
                calibration_images=16, latency_runs=3, threads=1, variants_dir=str(tmp_path / "variants"),
                db=str(tmp_path / "sweep.duckdb"))
    base.update(kw)
    return SweepConfig(**base)  # type: ignore[arg-type]


def cv_recipe(data: Path, out: Path, **kw: object) -> TrainConfig:
    """The recipe a tiny cross-validation trains: an EfficientNet at 32 px, EMA, the balanced sampler."""
    base = dict(data_dir=str(data), model="test_efficientnet", pretrained=False, img_size=32, epochs=2,
                batch_size=16, lr=3e-3, workers=0, threads=1, patience=0, ema_decay=0.9,
                imbalance="balanced_sampler", cache_dir=str(out / "cache"), output_dir=str(out / "models"),
                db=str(out / "results.duckdb"))
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]
