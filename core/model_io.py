"""Trained-model folders: ``results/models/<run_id>/`` with weights, card, resolved config and split.

A folder holds ``model.pt`` (best weights, state dict), ``model.json`` (architecture, classes in order,
preprocessing, provenance), ``config.yaml``, ``split.csv``, ``history.csv`` and the last training
``checkpoint.pth``. It can be reloaded by run id or by path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.classes import CLASSES
from core.data.transforms import Preprocessing
from core.errors import ModelError
from core.models import create_model

MODEL_FORMAT = "lesionlite-model/1"
DEFAULT_MODELS_DIR = Path("results/models")
DATA_LICENCE = "HAM10000: CC BY-NC 4.0, Tschandl et al. 2018, doi:10.7910/DVN/DBW86T (if trained on it)"


@dataclass
class ModelCard:
    """What ``model.json`` records about a trained model."""

    run_id: str
    architecture: str
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"format": MODEL_FORMAT, "run_id": self.run_id, "architecture": self.architecture,
                "classes": list(self.classes), "preprocessing": self.preprocessing.to_dict(), **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        known = {"format", "run_id", "architecture", "classes", "preprocessing"}
        return cls(run_id=d["run_id"], architecture=d["architecture"], classes=tuple(d["classes"]),
                   preprocessing=Preprocessing.from_dict(d["preprocessing"]),
                   extra={k: v for k, v in d.items() if k not in known})


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Save so that an interruption leaves the previous file, never a half-written one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_trained_model(run_dir: Path, weights: torch.nn.Module | dict[str, torch.Tensor], card: ModelCard) -> Path:
    """Write ``model.pt`` (a state dict; from a module or given as one) and ``model.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    atomic_torch_save(state, run_dir / "model.pt")
    (run_dir / "model.json").write_text(json.dumps(card.to_dict(), indent=2, default=str))
    return run_dir / "model.pt"


def resolve_model_dir(ref: str | Path, *, models_dir: str | Path = DEFAULT_MODELS_DIR) -> Path:
    """A model folder from a path or a run id (looked up under ``models_dir``)."""
    for candidate in (Path(ref), Path(models_dir) / str(ref)):
        if (candidate / "model.json").is_file():
            return candidate
    raise ModelError(f"no trained model at {ref!r}: expected a folder with model.json, "
                     f"or a run id under {models_dir}")


def load_trained_model(ref: str | Path, *, models_dir: str | Path = DEFAULT_MODELS_DIR,
                       device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelCard, Path]:
    """Reload a trained model (eval mode) with its card, by run id or folder path."""
    model_dir = resolve_model_dir(ref, models_dir=models_dir)
    card = ModelCard.from_dict(json.loads((model_dir / "model.json").read_text()))
    if card.classes != CLASSES:
        raise ModelError(f"{model_dir}: class order {card.classes} differs from this code's {CLASSES}")
    model = create_model(card.architecture, pretrained=False, num_classes=len(card.classes),
                         drop_rate=float(card.extra.get("drop_rate", 0.0)))
    state = torch.load(model_dir / "model.pt", map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), card, model_dir
