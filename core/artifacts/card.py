"""Model artifacts on disk and the one card that describes them.

Two kinds of folder, one :class:`Card`:

- a trained model, ``results/models/<run_id>/``: ``model.pt`` (best weights, state dict), ``card.json``,
  ``config.yaml``, ``split.csv``, ``history.csv`` and the last training ``checkpoint.pth``;
- a deployable variant, ``<variants_dir>/<parent_run_id>/<variant>/``: its file (``model.onnx``, ``model.pt`` (a
  whole pruned module written by the sweep), ``model.ort``, ``model.pte`` or ``model.tflite``) and ``card.json``
  (which names the file, with metrics, size and latency).

One file name and one format version (:data:`CARD_FORMAT`) for both. Both reload by path, a trained model also by
run id; :func:`load_predictor` serves either. A card of an earlier version is a one-line error that names the
upgrade command (``python -m scripts.upgrade_artifacts``), which rewrites it once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.calibration import DEFAULT_TARGET_ACCURACY, fit_calibration
from core.classes import CLASSES
from core.data.transforms import Preprocessing
from core.errors import ModelError
from core.models import create_model
from core.triage import Triage, fit_triage_on_logits

CARD_FORMAT = "lesionlite-card/2"
CARD_NAME = "card.json"
# Earlier versions (file name -> format): read only by the upgrade command (core.jobs.upgrade).
EARLIER_CARDS = {"model.json": "lesionlite-model/1", "model_card.json": "lesionlite-variant/1"}
UPGRADE_COMMAND = "python -m scripts.upgrade_artifacts"
DEFAULT_MODELS_DIR = Path("results/models")
DATA_LICENCE = "HAM10000: CC BY-NC 4.0, Tschandl et al. 2018, doi:10.7910/DVN/DBW86T (if trained on it)"
_FIELDS = ("format", "run_id", "architecture", "classes", "preprocessing", "variant", "parent_run_id", "file",
           "temperature", "uncertain_threshold", "triage")


@dataclass
class Card:
    """What a model says about itself: architecture, classes in order, preprocessing, lineage, and the rest
    (provenance, metrics, size, latency, pruning and quantization) in ``extra``."""

    run_id: str
    architecture: str
    preprocessing: Preprocessing
    classes: tuple[str, ...] = CLASSES
    variant: str = "trained"  # a training run's own checkpoint; sweep cells say dense-<mode> / pruned-...
    parent_run_id: str | None = None  # the dense training run a variant was made from; None for that run itself
    file: str | None = None  # the variant's model file in its folder
    temperature: float = 1.0  # calibration: probabilities are softmax(logits / temperature), fitted on val
    uncertain_threshold: float | None = None  # calibrated confidence below which a prediction is "uncertain"
    triage: Triage | None = None  # the screening operating points, fitted on val (None: written before them)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lineage_run_id(self) -> str:
        """The training run this model comes from (itself for a trained model)."""
        return self.parent_run_id or self.run_id

    @property
    def label(self) -> str:
        """One line naming the model, e.g. ``efficientnet_lite0 pruned-0.5-static (<run id>)``."""
        return f"{self.architecture} {self.variant} ({self.run_id})"

    def calibrate(self, logits: np.ndarray, labels: np.ndarray, *,
                  target_accuracy: float = DEFAULT_TARGET_ACCURACY, fitted_on: str = "val",
                  **note: object) -> None:
        """Fit the temperature, the "uncertain" threshold and the screening operating points on held-out logits
        (validation, or a fold's held-out images) and record them, with where they were fitted and ``note``, in
        this card. The one place a card is calibrated; the caller writes the card."""
        self.temperature, self.uncertain_threshold = fit_calibration(logits, labels, target_accuracy=target_accuracy)
        self.triage = fit_triage_on_logits(logits, labels, temperature=self.temperature)
        self.extra["calibration"] = {"fitted_on": fitted_on, "target_accuracy": target_accuracy, **note}

    def to_dict(self) -> dict[str, Any]:
        head = {"format": CARD_FORMAT, "run_id": self.run_id,
                "architecture": self.architecture, "classes": list(self.classes),
                "preprocessing": self.preprocessing.to_dict(), "variant": self.variant}
        if self.parent_run_id:
            head["parent_run_id"] = self.parent_run_id
        if self.file:
            head["file"] = self.file
        head.update(temperature=self.temperature, uncertain_threshold=self.uncertain_threshold,
                    triage=self.triage.to_dict() if self.triage is not None else None)
        return {**head, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "card") -> Card:
        """A card of :data:`CARD_FORMAT`; anything else is a :class:`ModelError` naming the problem."""
        if d.get("format") != CARD_FORMAT:
            raise ModelError(f"{source}: card format {d.get('format')!r}, this code reads {CARD_FORMAT!r}; "
                             f"upgrade it once: {UPGRADE_COMMAND} <folder>")
        missing = [k for k in ("run_id", "architecture", "preprocessing", "classes", "variant", "temperature",
                               "uncertain_threshold", "triage") if k not in d]
        if missing:
            raise ModelError(f"{source}: not a complete model card (missing {', '.join(missing)})")
        return cls._from_fields(d, source=source)

    @classmethod
    def _from_fields(cls, d: dict[str, Any], *, source: str) -> Card:
        card = cls(run_id=str(d["run_id"]), architecture=str(d["architecture"]),
                   preprocessing=Preprocessing.from_dict(d["preprocessing"]),
                   classes=tuple(d.get("classes", ())), variant=str(d.get("variant", "trained")),
                   parent_run_id=d.get("parent_run_id"), file=d.get("file"),
                   temperature=float(d.get("temperature", 1.0)), uncertain_threshold=d.get("uncertain_threshold"),
                   triage=Triage.from_dict(d.get("triage")),
                   extra={k: v for k, v in d.items() if k not in _FIELDS})
        if card.classes != CLASSES:
            raise ModelError(f"{source}: class order {card.classes} differs from this code's {CLASSES}")
        return card


def _read_card(path: Path) -> Card:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        earlier = [name for name in EARLIER_CARDS if (path.parent / name).is_file()]
        if earlier:
            raise ModelError(f"{path.parent}: its card is of an earlier version ({earlier[0]}); upgrade it once: "
                             f"{UPGRADE_COMMAND} {path.parent}") from None
        raise ModelError(f"no model card: {path} is missing") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    return Card.from_dict(data, source=str(path))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Save so that an interruption leaves the previous file, never a half-written one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def artifact_bytes(path: str | Path) -> int:
    """Bytes of a serialized model, counting an ONNX external-data file beside it."""
    path = Path(path)
    extra = path.with_name(path.name + ".data")
    return path.stat().st_size + (extra.stat().st_size if extra.is_file() else 0)


# Trained models ------------------------------------------------------------------------------------------------

def save_trained_model(run_dir: Path, weights: torch.nn.Module | dict[str, torch.Tensor], card: Card) -> Path:
    """Write ``model.pt`` (a state dict; from a module or given as one) and ``model.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    atomic_torch_save(state, run_dir / "model.pt")
    save_card(run_dir, card)
    return run_dir / "model.pt"


def save_card(run_dir: Path, card: Card) -> Path:
    """Write (or rewrite, e.g. once calibrated) a trained model's card."""
    path = run_dir / CARD_NAME
    path.write_text(json.dumps(card.to_dict(), indent=2, default=str))
    return path


def resolve_model_dir(ref: str | Path, *, models_dir: str | Path = DEFAULT_MODELS_DIR) -> Path:
    """A trained-model folder from a path or a run id (looked up under ``models_dir``)."""
    for candidate in (Path(ref), Path(models_dir) / str(ref)):
        if (candidate / CARD_NAME).is_file() or any((candidate / name).is_file() for name in EARLIER_CARDS):
            return candidate  # an earlier card is found here, and refused by _read_card with the upgrade command
    raise ModelError(f"no trained model at {ref!r}: expected a folder with {CARD_NAME}, "
                     f"or a run id under {models_dir}")


def parent_model_dir(card: Card, *, models_dir: str | Path = DEFAULT_MODELS_DIR) -> Path:
    """The trained-model folder a variant was made from: its run id under ``models_dir``, else the folder the sweep
    recorded (a cross-validation fold's folder is not under ``models_dir``)."""
    if not card.parent_run_id:
        raise ModelError(f"{card.run_id}: the variant card names no parent run")
    try:
        return resolve_model_dir(card.parent_run_id, models_dir=models_dir)
    except ModelError:
        recorded = card.extra.get("parent_dir")
        if recorded and (Path(recorded) / CARD_NAME).is_file():
            return Path(recorded)
        raise


def read_trained_card(ref: str | Path, *, models_dir: str | Path = DEFAULT_MODELS_DIR) -> Card:
    """A trained model's card, by run id or folder path, without loading its weights."""
    return _read_card(resolve_model_dir(ref, models_dir=models_dir) / CARD_NAME)


def load_trained_model(ref: str | Path, *, models_dir: str | Path = DEFAULT_MODELS_DIR,
                       device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Card, Path]:
    """Reload a trained model (eval mode) with its card, by run id or folder path."""
    model_dir = resolve_model_dir(ref, models_dir=models_dir)
    card = _read_card(model_dir / CARD_NAME)
    model = create_model(card.architecture, pretrained=False, num_classes=len(card.classes),
                         drop_rate=float(card.extra.get("drop_rate", 0.0)))
    state = torch.load(model_dir / "model.pt", map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), card, model_dir


# Deployable variants -------------------------------------------------------------------------------------------

def write_variant(folder: str | Path, *, model_file: str, card: Card) -> Card:
    """Write the card beside ``model_file`` in ``folder``; the size is measured from the file."""
    folder = Path(folder)
    path = folder / model_file
    if not path.is_file():
        raise ModelError(f"variant file missing: {path}")
    card.file = model_file
    card.extra["size_bytes"] = artifact_bytes(path)
    (folder / CARD_NAME).write_text(json.dumps(card.to_dict(), indent=2, default=str))
    return card


def read_variant_card(folder: str | Path) -> Card:
    """The card of a variant folder; a :class:`ModelError` naming the problem if it is not one."""
    card = _read_card(Path(folder) / CARD_NAME)
    if not card.file:
        raise ModelError(f"{Path(folder) / CARD_NAME}: a trained model's card, not a variant's (it names no file)")
    return card


def is_variant_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a deployable variant (its card names a model file). A variant card of an earlier
    version counts, so that reading it says how to upgrade; a damaged card too, so that reading it says so."""
    folder = Path(folder)
    if (folder / "model_card.json").is_file():
        return True
    path = folder / CARD_NAME
    if not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text()).get("file"))
    except (json.JSONDecodeError, AttributeError):
        return True


def variant_folders(root: str | Path) -> list[Path]:
    """``root`` if it is a variant folder, else the variant folders directly below it (sorted)."""
    root = Path(root)
    if is_variant_folder(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and is_variant_folder(p))
