"""Training on torchrun: 2 gloo processes on CPU train, store one run (rank 0 only), and land close to the
single-process run with the same seed and global batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from core.data.sharding import RankShard
from core.store.results import ResultsStore

REPO = Path(__file__).resolve().parent.parent


def test_rank_shards_together_are_the_single_process_batches() -> None:
    def base() -> WeightedRandomSampler:  # each rank builds the epoch's sampler from the same seed
        return WeightedRandomSampler(torch.ones(10, dtype=torch.double), 10, generator=torch.Generator().manual_seed(3))

    order = list(base())
    shards = [list(RankShard(base(), rank=r, world=2)) for r in range(2)]
    per_rank_batch = 2
    for k in range(2):  # the k-th batches of both ranks = the k-th global batch of 4
        together = shards[0][k * per_rank_batch:(k + 1) * per_rank_batch] + \
            shards[1][k * per_rank_batch:(k + 1) * per_rank_batch]
        assert sorted(together) == sorted(order[k * 4:(k + 1) * 4])
    assert len(RankShard(base(), rank=0, world=3)) == 4  # padded to divide evenly


def _train(args: list[str], *, procs: int, db: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    common = ["-m", "scripts.train", "--model", "test_resnet", "--no-pretrained", "--img-size", "32",
              "--epochs", "2", "--batch-size", "16", "--workers", "0", "--threads", "1",
              "--imbalance", "balanced_sampler", "--cache-dir", str(tmp_path / "cache"),
              "--output-dir", str(tmp_path / f"models-{procs}"), "--db", str(db), *args]
    if procs == 1:
        cmd = [sys.executable, *common]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
        cmd = [torchrun, "--standalone", "--nproc-per-node", str(procs), *common]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # starts processes or trains
def test_torchrun_two_gloo_processes_train_one_run(synthetic_root: Path, tmp_path: Path) -> None:
    data = ["--data-dir", str(synthetic_root)]
    single = _train(data, procs=1, db=tmp_path / "single.duckdb", tmp_path=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = _train(data, procs=2, db=tmp_path / "ddp.duckdb", tmp_path=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "data-parallel: rank 1 of 2 (gloo)" in ddp.stderr
    with ResultsStore(tmp_path / "ddp.duckdb", read_only=True) as store:
        runs = store.runs()
        assert len(runs) == 1  # rank 0 alone wrote the store
        ddp_val = store.metrics(runs["run_id"][0]).query("split == 'val'").set_index("name")["value"]
        epochs = store.query("SELECT count(DISTINCT epoch) AS n FROM history")["n"][0]
    assert epochs == 2
    assert len(list((tmp_path / "models-2").iterdir())) == 1  # one run folder, not one per rank
    with ResultsStore(tmp_path / "single.duckdb", read_only=True) as store:
        single_val = store.metrics(store.runs()["run_id"][0]).query("split == 'val'").set_index("name")["value"]
    # Same seed, same global batches; batch-norm statistics per rank and augmentation draws differ a little.
    assert abs(ddp_val["accuracy"] - single_val["accuracy"]) < 0.15
    assert abs(ddp_val["balanced_accuracy"] - single_val["balanced_accuracy"]) < 0.15


@pytest.mark.slow  # starts processes or trains
def test_torchrun_refuses_a_global_batch_that_does_not_divide(synthetic_root: Path, tmp_path: Path) -> None:
    bad = _train(["--data-dir", str(synthetic_root), "--batch-size", "15"], procs=2, db=tmp_path / "bad.duckdb",
                 tmp_path=tmp_path)
    assert bad.returncode != 0 and "must divide by the 2 processes" in bad.stderr
    assert not (tmp_path / "bad.duckdb").exists() and not (tmp_path / "models-2").exists()  # nothing written
