"""Provenance of every result: run ids, the code's git SHA, the device, file hashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import secrets
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a device is described: reading a store must not load it
    import torch

_REPO = Path(__file__).resolve().parent.parent


def new_run_id(model: str, *, kind: str = "train") -> str:
    """A sortable, unique id: ``20261126-071502-resnet50-train-a3f9``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{model}-{kind}-{secrets.token_hex(2)}"


@cache
def git_sha() -> str:
    """The code's commit, with ``-dirty`` if tracked files differ from it; ``unknown`` outside a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def device_description(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}x{torch.get_num_threads()}threads"


def machine_description() -> dict[str, str]:
    """Where a latency figure was measured: latency belongs to a machine, so every timed cell says which."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cpu_flags": cpu_flags()}


def cpu_flags() -> str:
    """The SIMD flags that decide which int8 kernels ONNX Runtime picks (VNNI or not), for every timed figure."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/vnni"


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Provenance:
    """Where a result comes from; the same fields on every run in the store (training, sweep cell, evaluation)."""

    dataset: str
    dataset_fingerprint: str
    split_hash: str
    seed: int
    device: str
    git_sha: str

    @classmethod
    def here(cls, *, dataset: str | Path, dataset_fingerprint: str, split_hash: str, seed: int,
             device: torch.device) -> Provenance:
        """This process's provenance: the code's git SHA and the device it runs on are filled in."""
        return cls(str(dataset), dataset_fingerprint, split_hash, int(seed), device_description(device), git_sha())
