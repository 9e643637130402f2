"""The GPU data path, exercised on CPU: images uploaded once, augmented per image, the same sampling order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.cli import run_cli
from core.data.device_images import DeviceImages
from core.data.prepare import PreparedSplit, prepare_data
from core.data.split import make_split
from core.data.transforms import preprocessing_for
from core.models import create_model
from core.train.config import TrainConfig
from core.train.loaders import train_loader
from scripts import bench_gpu_data


def _split(root: Path, tmp_path: Path) -> PreparedSplit:
    prep = preprocessing_for(create_model("test_resnet", pretrained=False), 32)
    data = prepare_data(str(root), prep=prep, cache_dir=str(tmp_path / "cache"), workers=0)
    return PreparedSplit(data, make_split(data.table, seed=0), prep)


def test_device_batches_follow_the_loader_order_and_augment_each_image(synthetic_root: Path, tmp_path: Path) -> None:
    split = _split(synthetic_root, tmp_path)
    cfg = TrainConfig(batch_size=8, workers=0, imbalance="balanced_sampler")
    on_device = DeviceImages(split.dataset("train", transform=None), device=torch.device("cpu"))
    assert on_device.images.dtype == torch.uint8 and on_device.images.shape[1] == 3
    batches = train_loader(split, cfg, 5, on_device=on_device)
    loader = train_loader(split, cfg, 5)
    assert len(batches) == len(loader)
    (images, labels), (_, loader_labels) = next(iter(batches)), next(iter(loader))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert torch.equal(labels, loader_labels)  # the same balanced draw, the same order
    assert images.mean().abs() < 3 and images.std() > 0.05  # normalised
    twice = torch.stack([batches.transform(on_device.images[0]) for _ in range(4)])
    assert not all(torch.equal(twice[0], t) for t in twice[1:])  # random per image, not one crop for all


def test_training_on_the_device_path_and_the_benchmark_script(synthetic_root: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from scripts import train as train_cli

    args = ["--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--epochs", "1", "--batch-size", "16",
            "--workers", "0", "--threads", "1", "--data-on-device", "--data-dir", str(synthetic_root),
            "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "models"),
            "--db", str(tmp_path / "r.duckdb")]
    assert run_cli(train_cli.main, train_cli.get_args_parser(), args) == 0
    code = run_cli(bench_gpu_data.main, bench_gpu_data.get_args_parser(),
                   ["--data-dir", str(synthetic_root), "--model", "test_resnet", "--img-size", "32",
                    "--batch-size", "16", "--steps", "2", "--warmup", "1", "--workers", "0", "--device", "cpu",
                    "--cache-dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0 and "of raw (target >= 80%)" in out and "DataLoader (0 workers)" in out
