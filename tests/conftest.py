"""Shared fixtures: small synthetic datasets, paths to the real data in ../shared (skipped where absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.data.synthetic import generate_synthetic_dataset

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real HAM10000 data not available: {path} is absent (it lives in ../shared beside the checkout)")
    return path


@pytest.fixture(scope="session")
def full_metadata_csv() -> Path:
    return _shared("ham10000-full-metadata") / "HAM10000_metadata.csv"


@pytest.fixture(scope="session")
def real_subset_dir() -> Path:
    return _shared("ham10000")


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return _shared("ham10000-samples")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic HAM10000-layout dataset, generated once per session (read-only for tests)."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(root, num_images=240, width=96, height=72, seed=1, min_lesions_per_class=8)
    return root


@pytest.fixture
def synthetic_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic dataset that a test may damage."""
    dst = tmp_path / "data"
    shutil.copytree(synthetic_root, dst)
    return dst


@pytest.fixture(scope="session")
def trained_tiny(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny model trained for a few epochs on the synthetic data, stored in its own results store."""
    from core.jobs.train import run_training
    from core.train.config import TrainConfig

    out = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(data_dir=str(synthetic_root), model="test_efficientnet", pretrained=False, img_size=32,
                      epochs=3, batch_size=16, lr=3e-3, workers=0, threads=1, patience=0,
                      cache_dir=str(out / "cache"), output_dir=str(out / "models"), db=str(out / "results.duckdb"))
    return run_training(cfg)


@pytest.fixture(scope="session")
def sweep_store(trained_tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results store with the tiny model's training run and a small sweep of deployable variants."""
    from core.jobs.sweep import SweepConfig, run_sweep

    out = tmp_path_factory.mktemp("sweepstore")
    db = out / "results.duckdb"
    shutil.copy(trained_tiny.config.db, db)
    run_sweep(SweepConfig(train_config=str(trained_tiny.run_dir / "config.yaml"), models=["test_efficientnet"],
                          parents=[f"test_efficientnet={trained_tiny.run_dir}"], ratios=[0.0, 0.5],
                          modes=["torch_fp32", "fp32", "static"], finetune_epochs=1, calibration_images=16,
                          latency_runs=3, threads=1, variants_dir=str(out / "variants"), db=str(db)))
    return db


@pytest.fixture(scope="session")
def gated_variant(sweep_store: Path, trained_tiny, tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[Path, dict[str, float]]:
    """A copy of a sweep variant with an out-of-distribution gate fitted by the job, and the job's figures."""
    from core.jobs.gate_fit import GateConfig, run_gate_fit

    out = tmp_path_factory.mktemp("gated")
    folder = out / "pruned-0.5-static"
    shutil.copytree(next((sweep_store.parent / "variants").glob("*/pruned-0.5-static")), folder)
    db = out / "results.duckdb"
    shutil.copy(sweep_store, db)
    # a tiny model on tiny synthetic data: its gate turns away ~10% of test images (a real one is held to 5%)
    figures = run_gate_fit(GateConfig(model=str(folder), models_dir=str(trained_tiny.run_dir.parent), img_size=96,
                                      db=str(db), max_false_rejection=0.5))
    return folder, figures


# A test that needs a trained model for the session (and so a sweep, a gate or a dashboard built on one), a finished
# cross-validation, or the complete real metadata or image subset (seconds per split) waits for these fixtures: it is
# "slow", as are tests that train, build phone runtimes, load the committed release or start a server themselves
# (marked where they are). The site's tests run on `variant_folder` (tests/site_model.py: seconds, no sweep).
# `make test-fast` (`pytest -m "not slow"`) runs the others: at most 3 minutes alone.
SLOW_FIXTURES = frozenset({"trained_tiny", "finished_cv", "full_metadata_csv", "real_subset_dir"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):  # the closure: fixtures of fixtures too
            item.add_marker(pytest.mark.slow)
