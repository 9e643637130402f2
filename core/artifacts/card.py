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

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.artifacts.records import Calibration, Compression, Deployment, Origin, build_record
from core.calibration import DEFAULT_TARGET_ACCURACY, fit_calibration
from core.classes import CLASSES
from core.data.transforms import Preprocessing
from core.errors import ModelError
from core.fusion import MetadataFusion
from core.models import create_model
from core.triage import Triage, fit_triage_on_logits

CARD_FORMAT = "lesionlite-card/3"
CARD_NAME = "card.json"
# Earlier versions: read only by the upgrade command (core.jobs.upgrade). Files of version 1 had other names.
EARLIER_CARDS = {"model.json": "lesionlite-model/1", "model_card.json": "lesionlite-variant/1"}
EARLIER_FORMATS = ("lesionlite-card/2", *EARLIER_CARDS.values())
UPGRADE_COMMAND = "python -m scripts.upgrade_artifacts"
DEFAULT_MODELS_DIR = Path("results/models")


def fitted_calibration(logits: np.ndarray, labels: np.ndarray, *,
                       target_accuracy: float = DEFAULT_TARGET_ACCURACY, fitted_on: str = "val",
                       **notes: object) -> tuple[Calibration, Triage]:
    """The temperature, the "uncertain" threshold and the screening operating points fitted on held-out logits
    (validation, or a fold's held-out images), with where they were fitted and ``notes``: the one place a model is
    calibrated (:meth:`Card.calibrate` records them in a card)."""
    temperature, threshold = fit_calibration(logits, labels, target_accuracy=target_accuracy)
    calibration = Calibration(temperature=temperature, uncertain_threshold=threshold, fitted_on=fitted_on,
                              target_accuracy=target_accuracy, notes=dict(notes))
    return calibration, fit_triage_on_logits(logits, labels, temperature=temperature)


@dataclass
class Card:
    """What a model says about itself: architecture, classes in order, preprocessing and lineage, with typed records
    for its provenance (:class:`Origin`), calibration, screening operating points (:class:`Triage`), compression and
    deployment, and its metrics per split."""

    run_id: str
    architecture: str
    preprocessing: Preprocessing
    origin: Origin
    classes: tuple[str, ...] = CLASSES
    variant: str = "trained"  # a training run's own checkpoint; sweep cells say dense-<mode> / pruned-...
    parent_run_id: str | None = None  # the dense training run a variant was made from; None for that run itself
    file: str | None = None  # the variant's model file in its folder
    drop_rate: float = 0.0  # the architecture's dropout before the classifier (rebuilding the module needs it)
    calibration: Calibration = field(default_factory=Calibration.none)
    triage: Triage | None = None  # the screening operating points, fitted on val with the calibration
    compression: Compression | None = None  # variants only
    deployment: Deployment | None = None  # variants only
    fusion: MetadataFusion | None = None  # metadata late fusion with its own calibration (None: the image alone)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> scalar metrics (card_metrics)

    @property
    def temperature(self) -> float:
        return self.calibration.temperature

    @property
    def uncertain_threshold(self) -> float | None:
        return self.calibration.uncertain_threshold

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
                  **notes: object) -> None:
        """Fit the temperature, the "uncertain" threshold and the screening operating points on held-out logits
        (validation, or a fold's held-out images) and record them, with where they were fitted and ``notes``, in
        this card. The caller writes the card."""
        self.calibration, self.triage = fitted_calibration(logits, labels, target_accuracy=target_accuracy,
                                                           fitted_on=fitted_on, **notes)

    def to_dict(self) -> dict[str, Any]:
        def record(r: Any) -> Any:
            return r.to_dict() if r is not None else None

        return {"format": CARD_FORMAT, "run_id": self.run_id, "architecture": self.architecture,
                "classes": list(self.classes), "preprocessing": self.preprocessing.to_dict(), "variant": self.variant,
                "parent_run_id": self.parent_run_id, "file": self.file, "drop_rate": self.drop_rate,
                "origin": self.origin.to_dict(), "calibration": self.calibration.to_dict(),
                "triage": record(self.triage), "compression": record(self.compression),
                "deployment": record(self.deployment), "fusion": record(self.fusion), "metrics": self.metrics}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "card") -> Card:
        """A card of :data:`CARD_FORMAT`; anything else is a :class:`ModelError` naming the problem."""
        if d.get("format") != CARD_FORMAT:
            hint = (f"upgrade it once: {UPGRADE_COMMAND} <folder>" if d.get("format") in EARLIER_FORMATS
                    else "not a card this code or its upgrade command knows")
            raise ModelError(f"{source}: card format {d.get('format')!r}, this code reads {CARD_FORMAT!r}; {hint}")
        fields_ = {k: v for k, v in d.items() if k != "format"}
        missing = [k for k in ("run_id", "architecture", "preprocessing", "classes", "variant", "origin",
                               "calibration", "triage") if k not in fields_]
        if missing:
            raise ModelError(f"{source}: not a complete model card (missing {', '.join(missing)})")

        def record(kind: Any, key: str) -> Any:
            return kind.from_dict(fields_.pop(key), source=source) if fields_.get(key) is not None else None

        records = {"origin": record(Origin, "origin"), "calibration": record(Calibration, "calibration"),
                   "compression": record(Compression, "compression"), "deployment": record(Deployment, "deployment"),
                   "fusion": record(MetadataFusion, "fusion"), "triage": Triage.from_dict(fields_.pop("triage")),
                   "preprocessing": Preprocessing.from_dict(fields_.pop("preprocessing")),
                   "classes": tuple(fields_.pop("classes"))}
        card = build_record(cls, fields_, source=source, **{k: v for k, v in records.items() if v is not None})
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
    """Write ``model.pt`` (a state dict; from a module or given as one) and the card."""
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
        recorded = card.origin.parent_dir
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
                         drop_rate=card.drop_rate)
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
    size = artifact_bytes(path)
    card.deployment = dataclasses.replace(card.deployment, size_bytes=size) if card.deployment else Deployment(size)
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
