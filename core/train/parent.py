"""The dense parent a job builds on (compression, calibration, the photo gate): a trained run folder with its
config and its split's prepared data, and its own predictions for paired differences."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.artifacts.card import (
    load_trained_model,
    read_trained_card,
)
from core.config import build_config
from core.data.prepare import PreparedSplit, prepare_data
from core.data.split import apply_split, load_split
from core.train.config import TrainConfig
from core.train.evaluation import model_logits


@dataclass
class Parent:
    """A dense training run and the prepared data of its split."""

    run_id: str
    model_dir: Path
    train_cfg: TrainConfig
    split: PreparedSplit
    _predictions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)

    def predictions(self, split: str) -> np.ndarray:
        """The dense parent's own class predictions on ``split`` (in the split's row order): what every cell's
        paired difference is taken against. Computed once per process."""
        if split not in self._predictions:
            model, _, _ = load_trained_model(self.model_dir)
            for name in ("val", "test"):
                logits, _ = model_logits(model, self.split.loader(name, batch_size=64), torch.device("cpu"))
                self._predictions[name] = logits.argmax(1)
        return self._predictions[split]


def load_parent(model_dir: str) -> Parent:
    """A trained run folder with its config and its split's prepared data (cache decoded, loaders ready)."""
    model_dir_p = Path(model_dir)
    train_cfg = build_config(TrainConfig, yaml_path=model_dir_p / "config.yaml")
    card = read_trained_card(model_dir_p)
    data = prepare_data(train_cfg.data_dir, prep=card.preprocessing, cache_dir=train_cfg.cache_dir,
                        skip_bad=train_cfg.skip_bad, workers=train_cfg.workers)
    table = apply_split(data.table, load_split(model_dir_p / "split.csv"))
    return Parent(card.run_id, model_dir_p, train_cfg, PreparedSplit(data, table, card.preprocessing))
