"""A cross-validation's settings, folder and shared state: new, or resumed from its folder."""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from core.config import build_config, option
from core.data.folds import apply_folds, load_folds, make_folds, save_folds
from core.data.prepare import PreparedData
from core.data.split import apply_split, load_split, make_split
from core.data.synthetic import ensure_synthetic_dataset
from core.data.transforms import Preprocessing, preprocessing_for
from core.errors import ConfigError
from core.metrics import Evaluation
from core.models import create_model
from core.provenance import new_run_id
from core.runtime import resolve_device, seed_everything
from core.train.config import TrainConfig

log = logging.getLogger(__name__)


CV_FILE = "cv.yaml"


@dataclass
class CVConfig:
    """How to cross-validate a recipe (the recipe itself is a :class:`TrainConfig`)."""

    folds: int = option(5, "number of lesion-grouped, dx-stratified folds over the non-test images")
    fold_seed: int = option(-1, "seed of the fold assignment (-1: the recipe's seed)")
    tta: bool = option(True, "also score held-out folds and the test split with flip test-time augmentation")
    cv_dir: str = option("results/cv", "folder of cross-validation runs (fold assignment, fold models, checkpoints)")
    cv_resume: str | None = option(None, "continue this cross-validation: its id under cv_dir, or its folder")
    only_folds: list[int] = option([], "train only these folds now (e.g. one per machine, each with its own store, "
                                       "merged with scripts.ingest); the summary is stored once every fold is")
    ray: str | None = option(None, "run the folds as Ray tasks: 'local' (an instance for this command), 'auto' or "
                                   "an address (join a cluster; the folder and the data must be reachable there). "
                                   "Each task reserves the recipe's threads as CPUs")

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"folds must be at least 2, got {self.folds}")
        bad = [f for f in self.only_folds if not 0 <= f < self.folds]
        if bad:
            raise ConfigError(f"only_folds {bad} outside 0..{self.folds - 1}")


@dataclass
class CVResult:
    cv_id: str
    folder: Path
    folds_done: list[int]
    evaluations: dict[str, Evaluation] = field(default_factory=dict)  # empty until every fold is stored
    curve: pd.DataFrame | None = None  # pooled out-of-fold figures per epoch
    folds: int = 0

    @property
    def complete(self) -> bool:
        return len(self.folds_done) == self.folds


def fold_run_id(cv_id: str, fold: int) -> str:
    return f"{cv_id}-fold{fold}"


@dataclass
class CVContext:
    """What every fold of one cross-validation shares."""

    cv_id: str
    folder: Path
    recipe: TrainConfig
    cv: CVConfig
    data: PreparedData
    folds: pd.DataFrame
    prep: Preprocessing
    device: torch.device

    @functools.cached_property
    def lesions(self) -> dict[str, str]:  # built once: every scoring of every fold looks its images up here
        return dict(zip(self.folds["image_id"], self.folds["lesion_id"], strict=True))

    def groups(self, image_ids: list[str] | pd.Series) -> np.ndarray:
        return np.array([self.lesions[i] for i in image_ids])


def _open(recipe: TrainConfig, cv: CVConfig) -> tuple[str, Path, TrainConfig, CVConfig, bool]:
    """A new cross-validation folder, or the stored settings of the one being resumed."""
    if not cv.cv_resume:
        cv_id = new_run_id(recipe.model, kind=f"cv{cv.folds}")
        return cv_id, Path(cv.cv_dir) / cv_id, recipe, cv, False
    folder = Path(cv.cv_resume)
    if not (folder / CV_FILE).is_file():
        folder = Path(cv.cv_dir) / cv.cv_resume
    if not (folder / CV_FILE).is_file():
        raise ConfigError(f"nothing to resume at {cv.cv_resume!r}: no {CV_FILE} there or under {cv.cv_dir}")
    stored = yaml.safe_load((folder / CV_FILE).read_text())
    recipe = build_config(TrainConfig, overrides={**stored["recipe"], "db": recipe.db, "device": recipe.device})
    resumed = build_config(CVConfig, overrides={**stored["cv"], "cv_dir": str(folder.parent),
                                                "cv_resume": str(folder), "only_folds": cv.only_folds,
                                                "ray": cv.ray})
    log.info("resuming cross-validation %s", folder.name)
    return folder.name, folder, recipe, resumed, True


def open_cv(recipe: TrainConfig, cv: CVConfig) -> CVContext:
    cv_id, folder, recipe, cv, resumed = _open(recipe, cv)
    seed_everything(recipe.seed)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    device = resolve_device(recipe.device)
    prep = preprocessing_for(create_model(recipe.model, pretrained=False), recipe.img_size)
    if recipe.synthetic:
        ensure_synthetic_dataset(recipe.data_dir, num_images=recipe.synthetic_images, seed=recipe.seed)
    data = recipe.prepare(prep)
    if resumed:
        folds = apply_folds(data.table, load_folds(folder / "folds.csv"))
    else:
        table = (apply_split(data.table, load_split(recipe.split_file)) if recipe.split_file else
                 make_split(data.table, val_fraction=recipe.val_fraction, test_fraction=recipe.test_fraction,
                            seed=recipe.seed))
        folds = make_folds(table, k=cv.folds, seed=recipe.seed if cv.fold_seed < 0 else cv.fold_seed)
        folder.mkdir(parents=True, exist_ok=False)
        save_folds(folds, folder / "folds.csv")
        (folder / CV_FILE).write_text(yaml.safe_dump({"recipe": asdict(recipe), "cv": asdict(cv)}, sort_keys=False))
    return CVContext(cv_id, folder, recipe, cv, data, folds, prep, device)
