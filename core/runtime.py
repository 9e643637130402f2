"""Where and how reproducibly a job runs: seeding and device selection."""

from __future__ import annotations

import random

import numpy as np
import torch

from core.errors import ConfigError, check_allowed

DEVICES = ("auto", "cpu", "cuda")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; asking for CUDA without one is an error naming the choices."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA device is available; allowed here: auto, cpu")
    check_allowed(name, DEVICES, what="device")
    return torch.device(name)
