"""The dense parent a job builds on (compression, calibration, the photo gate): a trained run folder with its
config and its split's prepared data, and its own predictions for paired differences.

A parent refit on train + val after a cross-validation (``scripts.train_final``) has no validation split: its
:attr:`Parent.scored_splits` is the test split alone, and its card's calibration and operating points, fitted on the
cross-validation's out-of-fold predictions, are what its cells inherit."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.artifacts.card import (
    Card,
    load_trained_model,
    parent_model_dir,
    read_trained_card,
    read_variant_card,
    save_trained_model,
)
from core.config import build_config, save_config
from core.data.prepare import PreparedSplit
from core.data.split import apply_split, load_split
from core.errors import ModelError
from core.models import create_model
from core.train.config import TrainConfig
from core.train.evaluation import model_logits


@dataclass
class Parent:
    """A dense training run and the prepared data of its split."""

    run_id: str
    model_dir: Path
    train_cfg: TrainConfig
    split: PreparedSplit
    card: Card
    _predictions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def scored_splits(self) -> tuple[str, ...]:
        """The held-out splits its cells are scored on: validation (chooses, calibrates) and test (reports); a
        model refit on train + val has test alone."""
        return tuple(s for s in ("val", "test") if len(self.split.rows(s)))

    def predictions(self, split: str) -> np.ndarray:
        """The dense parent's own class predictions on ``split`` (in the split's row order): what every cell's
        paired difference is taken against. Computed once per process."""
        if split not in self._predictions:
            model, _, _ = load_trained_model(self.model_dir)
            for name in self.scored_splits:
                logits, _ = model_logits(model, self.split.loader(name, batch_size=64), torch.device("cpu"))
                self._predictions[name] = logits.argmax(1)
        return self._predictions[split]


def load_parent(model_dir: str) -> Parent:
    """A trained run folder with its config and its split's prepared data (cache decoded, loaders ready)."""
    model_dir_p = Path(model_dir)
    train_cfg = build_config(TrainConfig, yaml_path=model_dir_p / "config.yaml")
    card = read_trained_card(model_dir_p)
    data = train_cfg.prepare(card.preprocessing)
    table = apply_split(data.table, load_split(model_dir_p / "split.csv"))
    return Parent(card.run_id, model_dir_p, train_cfg, PreparedSplit(data, table, card.preprocessing), card)



def promote_variant(variant_dir: str | Path, out_dir: str | Path) -> Path:
    """Turn a dense PyTorch variant (e.g. a lower-resolution cell, ``res-128-torch_fp32``) into a trained-model folder
    that a sweep can take as its parent: its weights as a state dict, its card as a trained model's card (lineage
    kept in ``promoted_from``), its source parent's config at the variant's input size, and the same split.

    Chained compression (lower resolution, then pruning) builds on this; paired differences against the original
    dense parent come from the stored predictions (same split, same images)."""
    variant_dir, out_dir = Path(variant_dir), Path(out_dir)
    card = read_variant_card(variant_dir)
    if card.file != "model.pt":
        raise ModelError(f"{variant_dir}: only a PyTorch variant (model.pt) can become a parent; this one ships "
                         f"{card.file}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelError(f"{out_dir} exists and is not empty: choose a new folder")
    module = torch.load(variant_dir / "model.pt", map_location="cpu", weights_only=False)  # our own sweep's module
    dense = create_model(card.architecture, pretrained=False, num_classes=len(card.classes),
                         drop_rate=card.drop_rate)
    try:
        dense.load_state_dict(module.state_dict())
    except RuntimeError:
        raise ModelError(f"{variant_dir}: not a dense {card.architecture} (a pruned variant's shapes are not the "
                         f"architecture's, so it cannot be a parent)") from None
    source_dir = parent_model_dir(card)
    train_cfg = build_config(TrainConfig, yaml_path=source_dir / "config.yaml")
    train_cfg = dataclasses.replace(train_cfg, img_size=card.preprocessing.input_size)
    lineage = {"variant_dir": str(variant_dir), "parent_run_id": card.parent_run_id, "variant": card.variant}
    promoted = dataclasses.replace(card, variant="trained", parent_run_id=None, file=None, compression=None,
                                   deployment=None, origin=dataclasses.replace(card.origin, promoted_from=lineage))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(train_cfg, out_dir / "config.yaml")
    (out_dir / "split.csv").write_bytes((source_dir / "split.csv").read_bytes())
    save_trained_model(out_dir, dense, promoted)
    return out_dir
