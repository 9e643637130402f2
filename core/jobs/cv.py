"""Cross-validation of a training recipe: k lesion-grouped folds, every image scored once out of fold.

Each fold's model is trained with the recipe for its fixed number of epochs on the other folds and scored on its
own fold (never selected on it: the held-out fold is the out-of-fold estimate, so the last epoch's weights are
kept). The held-out logits of every epoch are kept too, so the out-of-fold learning curve can fix the epoch count
of a final model. Each fold is stored as a run of kind ``cv_fold`` (held-out predictions as split ``oof``, the
fixed test split as ``test``, with flip test-time augmentation as ``oof_tta`` / ``test_tta``); once every fold is
stored, the pooled out-of-fold figures with their lesion-level intervals, TTA's paired gain and the fold
ensemble's test figures are stored as one run of kind ``cv`` whose id names the cross-validation.

Resumable: a fold already in the store is skipped, and a fold interrupted mid-way continues from its last
epoch's checkpoint (``--cv-resume``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from core.artifacts.card import Card, atomic_torch_save, save_trained_model
from core.calibration import calibrated_softmax
from core.classes import CLASSES
from core.config import build_config, option, save_config
from core.data.folds import apply_folds, fold_split, folds_hash, load_folds, make_folds, save_folds
from core.data.prepare import PreparedData, PreparedSplit, prepare_data
from core.data.split import apply_split, load_split, make_split, save_split
from core.data.synthetic import ensure_synthetic_dataset
from core.data.transforms import Preprocessing, preprocessing_for
from core.errors import ConfigError
from core.intervals import interval_metrics, paired_differences
from core.metrics import Evaluation, evaluate_logits, evaluate_predictions
from core.models import create_model
from core.provenance import Provenance, new_run_id
from core.ray_pool import ray_map
from core.runtime import resolve_device, seed_everything
from core.store.results import Predictions, ResultsStore, RunRecord
from core.train.config import TrainConfig
from core.train.evaluation import model_logits
from core.train.loop import fit
from core.train.origin import origin_of

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
    data = prepare_data(recipe.data_dir, prep=prep, cache_dir=recipe.cache_dir, skip_bad=recipe.skip_bad,
                        workers=recipe.workers)
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


class _Eta:
    """Progress over every epoch still to run in this command, with an estimate of the time left."""

    def __init__(self, epochs_left: int):
        self.left, self.done, self.start = epochs_left, 0, time.perf_counter()

    def tick(self, what: str) -> None:
        self.done += 1
        per_epoch = (time.perf_counter() - self.start) / self.done
        remaining = (self.left - self.done) * per_epoch
        log.info("%s done; %d/%d epochs of this command, ETA %dm%02ds", what, self.done, self.left,
                 remaining // 60, remaining % 60)


def write_fold_run_files(ctx: CVContext, fold: int) -> Path:
    """Make a fold's folder a complete trained-run folder (its recipe as ``config.yaml``, its split as
    ``split.csv``: the held-out fold as val), so it can be a sweep's parent: paired differences are then taken on
    the held-out fold (out of fold) and the test split."""
    fold_dir = ctx.folder / f"fold{fold}"
    save_config(ctx.recipe, fold_dir / "config.yaml")
    save_split(fold_split(ctx.folds, fold), fold_dir / "split.csv")
    return fold_dir


def _checkpoint(fold_dir: Path) -> dict[str, Any] | None:
    path = fold_dir / "checkpoint.pth"
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def run_fold(ctx: CVContext, fold: int, eta: _Eta | None = None) -> RunRecord:
    """Train fold ``fold``'s model on the other folds and score it on its own fold and on test."""
    recipe, fold_dir = ctx.recipe, ctx.folder / f"fold{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    split = PreparedSplit(ctx.data, fold_split(ctx.folds, fold), ctx.prep)
    checkpoint = _checkpoint(fold_dir)
    seed_everything(recipe.seed + fold)
    model = create_model(recipe.model, pretrained=recipe.pretrained and checkpoint is None,
                         drop_rate=recipe.drop_rate)
    epoch_logits: list[np.ndarray] = list(checkpoint["oof_logits"]) if checkpoint else []
    log.info("fold %d/%d of %s: %d train / %d held-out images%s", fold + 1, ctx.cv.folds, ctx.cv_id,
             len(split.rows("train")), len(split.rows("val")),
             f", resuming after epoch {checkpoint['epoch'] + 1}" if checkpoint else "")

    def on_epoch(epoch: int, improved: bool, state: dict[str, Any]) -> None:
        state.pop("evaluated")
        epoch_logits.append(state.pop("val_logits"))
        atomic_torch_save({**state, "oof_logits": epoch_logits}, fold_dir / "checkpoint.pth")
        if eta is not None:
            eta.tick(f"fold {fold + 1}/{ctx.cv.folds} epoch {epoch + 1}/{recipe.epochs}")

    fitted = fit(model, split=split, cfg=recipe, device=ctx.device, checkpoint=checkpoint, on_epoch=on_epoch,
                 select_best=False)
    held = split.rows("val")
    outputs = _fold_outputs(model, ctx=ctx, split=split, oof_logits=epoch_logits[-1])
    card = Card(run_id=fold_run_id(ctx.cv_id, fold), architecture=recipe.model, preprocessing=ctx.prep,
                classes=CLASSES, variant=f"fold{fold}", drop_rate=recipe.drop_rate,
                origin=origin_of(recipe, split=split, cv_id=ctx.cv_id, fold=fold))
    card.calibrate(epoch_logits[-1], held["label"].to_numpy(), fitted_on="held-out fold")
    save_trained_model(fold_dir, model, card)
    write_fold_run_files(ctx, fold)
    np.savez_compressed(fold_dir / "oof_epochs.npz", logits=np.stack(epoch_logits),
                        image_ids=held["image_id"].to_numpy(dtype=str), labels=held["label"].to_numpy())
    evaluations, predictions = {}, {}
    for name, (rows, logits) in outputs.items():
        labels = rows["label"].to_numpy()
        evaluations[name] = evaluate_logits(labels, logits, temperature=card.temperature,
                                            groups=ctx.groups(rows["image_id"]), triage=card.triage)
        predictions[name] = Predictions(rows["image_id"].tolist(), labels,
                                        calibrated_softmax(logits, card.temperature))
    provenance = Provenance.here(dataset=recipe.data_dir, dataset_fingerprint=ctx.data.fingerprint,
                                 split_hash=split.hash, seed=recipe.seed, device=ctx.device)
    return RunRecord(run_id=fold_run_id(ctx.cv_id, fold), kind="cv_fold", model=recipe.model,
                     variant=f"fold{fold}", config={**asdict(recipe), "cv": {**asdict(ctx.cv), "cv_id": ctx.cv_id,
                                                                              "fold": fold}},
                     provenance=provenance, evaluations=evaluations, history=fitted.history,
                     predictions=predictions, artifacts={"weights": fold_dir / "model.pt"})


def _fold_outputs(model: torch.nn.Module, *, ctx: CVContext, split: PreparedSplit, oof_logits: np.ndarray
                  ) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """The fold model's logits with the rows they score: its held-out fold (``oof``, from the last epoch) and test,
    each also with test-time augmentation where the cross-validation asks for it."""
    recipe = ctx.recipe
    held, test = split.rows("val"), split.rows("test")
    loader = {"oof": split.loader("val", batch_size=recipe.batch_size * 2),
              "test": split.loader("test", batch_size=recipe.batch_size * 2)}
    outputs = {"oof": (held, oof_logits),
               "test": (test, model_logits(model, loader["test"], ctx.device, channels_last=recipe.channels_last)[0])}
    if ctx.cv.tta:
        for name, rows in (("oof", held), ("test", test)):
            outputs[f"{name}_tta"] = (rows, model_logits(model, loader[name], ctx.device,
                                                         channels_last=recipe.channels_last, tta=True)[0])
    return outputs


def _fold_predictions(store: ResultsStore, cv_id: str, k: int) -> pd.DataFrame:
    ids = [fold_run_id(cv_id, i) for i in range(k)]
    return store.query("SELECT run_id, split, image_id, label, probs FROM predictions WHERE list_contains(?, run_id) "
                       "ORDER BY run_id, split, image_id", [ids])


def _stack(frame: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    return frame["image_id"].tolist(), frame["label"].to_numpy(), np.stack(frame["probs"].to_numpy())


def oof_curve(ctx: CVContext) -> pd.DataFrame:
    """Pooled out-of-fold accuracy, balanced accuracy and melanoma recall after each epoch (argmax figures:
    calibration does not move them)."""
    per_fold = [np.load(ctx.folder / f"fold{i}" / "oof_epochs.npz") for i in range(ctx.cv.folds)]
    epochs = min(len(f["logits"]) for f in per_fold)
    labels = np.concatenate([f["labels"] for f in per_fold])
    groups = ctx.groups(np.concatenate([f["image_ids"] for f in per_fold]))
    rows = []
    for e in range(epochs):
        probs = np.concatenate([calibrated_softmax(f["logits"][e]) for f in per_fold])
        m = evaluate_predictions(labels, probs, groups=groups).metrics
        rows.append({"epoch": e, **{f"oof_{k}": m[k] for k in ("accuracy", "balanced_accuracy", "mel_recall",
                                                                  "auc_macro_ovr")},
                     "oof_balanced_accuracy_ci_low": m["balanced_accuracy_ci_low"],
                     "oof_balanced_accuracy_ci_high": m["balanced_accuracy_ci_high"]})
    return pd.DataFrame(rows)


def summarise(ctx: CVContext, store: ResultsStore) -> tuple[RunRecord, pd.DataFrame]:
    """The pooled out-of-fold figures, TTA's paired gain and the fold ensemble on test, as one ``cv`` run."""
    preds = _fold_predictions(store, ctx.cv_id, ctx.cv.folds)
    evaluations: dict[str, Evaluation] = {}
    predictions: dict[str, Predictions] = {}
    scalars: dict[str, dict[str, float]] = {}
    pooled: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}
    for name in ("oof", "oof_tta"):
        part = preds[preds["split"] == name].sort_values("image_id")
        if part.empty:
            continue
        ids, labels, probs = _stack(part)
        pooled[name] = ids, labels, probs
        evaluations[name] = evaluate_predictions(labels, probs, groups=ctx.groups(ids))
        predictions[name] = Predictions(ids, labels, probs)
    if "oof_tta" in pooled:
        ids, labels, plain = pooled["oof"]
        gain = paired_differences(labels, pooled["oof_tta"][2].argmax(1), plain.argmax(1), groups=ctx.groups(ids))
        scalars["oof_tta_vs_oof"] = interval_metrics(gain, prefix="delta_")
    for name in ("test", "test_tta"):
        part = preds[preds["split"] == name]
        if part.empty:
            continue
        members = [_stack(g.sort_values("image_id")) for _, g in part.groupby("run_id")]
        ids, labels = members[0][0], members[0][1]
        probs = np.mean([m[2] for m in members], axis=0)  # each member's temperature-scaled probabilities
        key = name.replace("test", "test_ensemble")
        evaluations[key] = evaluate_predictions(labels, probs, groups=ctx.groups(ids))
        predictions[key] = Predictions(ids, labels, probs)
    curve = oof_curve(ctx)
    provenance = Provenance.here(dataset=ctx.recipe.data_dir, dataset_fingerprint=ctx.data.fingerprint,
                                 split_hash=folds_hash(ctx.folds), seed=ctx.recipe.seed, device=ctx.device)
    record = RunRecord(run_id=ctx.cv_id, kind="cv", model=ctx.recipe.model, variant=f"cv{ctx.cv.folds}",
                       config={**asdict(ctx.recipe), "cv": asdict(ctx.cv)}, provenance=provenance,
                       evaluations=evaluations, scalars=scalars, predictions=predictions,
                       history=curve.to_dict("records"),
                       artifacts={"folds": ctx.folder / "folds.csv", "config": ctx.folder / CV_FILE})
    return record, curve


def fold_task(*, recipe: TrainConfig, folder: str, fold: int) -> RunRecord:
    """Run on a Ray worker: one cross-validation fold, returned as its run record (nothing is stored)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_fold(open_cv(recipe, CVConfig(cv_resume=folder)), fold)


def run_folds_on_ray(ctx: CVContext, folds: list[int], *, address: str) -> Iterator[RunRecord]:
    """Every fold of ``folds`` as a Ray task; yields each fold's run record as it finishes (the caller, the driver,
    is the only writer of the store)."""
    calls = {fold: {"recipe": ctx.recipe, "folder": str(ctx.folder.resolve()), "fold": fold} for fold in folds}
    for fold, record in ray_map(fold_task, calls, address=None if address == "local" else address,
                                cpus_per_task=max(1, ctx.recipe.threads)):
        log.info("ray: fold %d finished", fold)
        yield record


def run_cv(recipe: TrainConfig, cv: CVConfig) -> CVResult:
    """Train and score every fold not yet stored; store the summary once all are. Returns what is done."""
    ctx = open_cv(recipe, cv)
    wanted = ctx.cv.only_folds or list(range(ctx.cv.folds))
    with ResultsStore(ctx.recipe.db, read_only=Path(ctx.recipe.db).is_file()) as store:
        stored = {i for i in range(ctx.cv.folds) if store.has_run(fold_run_id(ctx.cv_id, i))}
    todo = [i for i in wanted if i not in stored]
    for fold in stored:  # folds of runs made before fold folders were complete run folders
        if not (ctx.folder / f"fold{fold}" / "split.csv").is_file():
            write_fold_run_files(ctx, fold)
    epochs_left = sum(ctx.recipe.epochs - (ckpt["epoch"] + 1 if (ckpt := _checkpoint(ctx.folder / f"fold{i}"))
                                           else 0) for i in todo)
    log.info("cross-validation %s: %d folds, %d stored, %d to run now (%d epochs)", ctx.cv_id, ctx.cv.folds,
             len(stored), len(todo), epochs_left)
    if ctx.cv.ray:
        records = run_folds_on_ray(ctx, todo, address=ctx.cv.ray)
    else:
        eta = _Eta(epochs_left)
        records = (run_fold(ctx, fold, eta) for fold in todo)
    for record in records:
        fold = record.config["cv"]["fold"]
        with ResultsStore(ctx.recipe.db) as store:  # opened only to write: a fold trains for many minutes
            store.record_run(record)
        stored.add(fold)
        ev = record.evaluations["oof"].metrics
        log.info("fold %d: held-out balanced accuracy %.3f [%.3f, %.3f], melanoma recall %.3f", fold,
                 ev["balanced_accuracy"], ev["balanced_accuracy_ci_low"], ev["balanced_accuracy_ci_high"],
                 ev["mel_recall"])
    result = CVResult(ctx.cv_id, ctx.folder, sorted(stored), folds=ctx.cv.folds)
    if len(stored) < ctx.cv.folds:
        log.info("%d of %d folds stored; continue with --cv-resume %s", len(stored), ctx.cv.folds, ctx.cv_id)
        return result
    with ResultsStore(ctx.recipe.db) as store:
        if store.has_run(ctx.cv_id):
            log.info("summary of %s already stored", ctx.cv_id)
        else:
            record, result.curve = summarise(ctx, store)
            store.record_run(record)
            result.evaluations = record.evaluations
    return result
