"""The training loop: AdamW with layer decay, cosine schedule with warm-up, one epoch, and ``fit`` (epochs with
validation, EMA, early stopping on balanced accuracy, an optional hook after every backward pass)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from core.calibration import calibrated_softmax
from core.compress.distill import Distillation
from core.data.device_images import DeviceImages
from core.data.prepare import PreparedSplit
from core.losses import make_criterion
from core.metrics import evaluate_predictions
from core.models import (
    freeze_stages,
    keep_frozen_eval,
)
from core.progress import progress
from core.train.config import TrainConfig
from core.train.evaluation import split_logits
from core.train.loaders import check_global_batch, train_loader
from core.train.mixing import BatchMix, mixed_loss
from core.world import World, sum_across

log = logging.getLogger(__name__)


def lr_schedule(optimizer: torch.optim.Optimizer, *, kind: str, warmup_steps: int, total_steps: int
                ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay or linear decay to zero at ``total_steps`` (the budget's end)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - progress if kind == "linear" else 0.5 * (1 + math.cos(math.pi * progress))

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
    mix = BatchMix(cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mix_prob)
    start = time.perf_counter()
    bar = progress(loader, total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
    for i, (images, targets) in enumerate(bar):
        if i >= n_batches:
            break
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        mixed = mix(images, targets)
        if mixed is not None:
            images = mixed.images
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(images)
            teacher = () if distillation is None else (distillation.teacher_logits(images),)
            loss = mixed_loss(criterion, logits.float(), targets, mixed, *teacher)
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
    t = _setup(model, split=split, cfg=cfg, device=device, world=world, distillation=distillation)
    history: list[dict[str, float]] = []
    best, best_epoch, start_epoch = -1.0, -1, 0
    best_state: dict[str, torch.Tensor] | None = None
    if checkpoint is not None:
        history, best, best_epoch, start_epoch = t.resume(model, checkpoint)
    has_val = len(split.rows("val")) > 0
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.patience and best_epoch >= 0 and epoch - best_epoch > cfg.patience:
            log.info("early stopping: no val balanced-accuracy gain for %d epochs", cfg.patience)
            break
        t.enter_phase(model, epoch=epoch, cfg=cfg)
        loader = train_loader(split, cfg, cfg.seed + epoch, world=world, on_device=t.on_device,
                              size=cfg.input_size_at(epoch))
        row = {"epoch": epoch, **train_one_epoch(t.trained, loader, criterion=t.criterion, optimizer=t.optimizer,
                                                 scheduler=t.scheduler, device=device, epoch=epoch, cfg=cfg,
                                                 frozen_norms=t.frozen_norms, ema=t.ema, distillation=distillation,
                                                 world=world, after_backward=after_backward)}
        val_logits = _validate(t.evaluated, split, row, cfg=cfg, device=device, world=world) if has_val else None
        history.append(row)
        score = row.get("val_balanced_accuracy", float(epoch))
        improved = score > best if select_best else True
        if improved:
            best, best_epoch = score, epoch
            if select_best:
                best_state = _cpu_copy(t.evaluated)
        if on_epoch is not None:
            on_epoch(epoch, improved, {**t.state(model), "epoch": epoch, "history": history, "best": best,
                                       "best_epoch": best_epoch, "val_logits": val_logits})
        _log_epoch(row, epoch=epoch, cfg=cfg, has_val=has_val, best=improved and select_best)
    if not select_best:  # the last epoch's (EMA) weights: a fixed epoch count, nothing chosen on validation
        best_state = _cpu_copy(t.evaluated)
    if t.ema is not None and best_state is not None:
        model.load_state_dict(best_state)  # the caller gets the selected weights, as without EMA via best_state
    if cfg.channels_last:  # hand back an ordinary model: exporters and pruners expect contiguous weights
        model.to(memory_format=torch.contiguous_format)
    return FitResult(history, best, best_epoch, best_state)


@dataclass
class _Training:
    """What one fit trains with: the (DDP-wrapped) model, loss, optimiser, schedule, EMA and data on device."""

    trained: nn.Module
    evaluated: nn.Module  # the EMA weights when ema_decay is set, else the model
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    frozen_norms: list[nn.Module]
    ema: nn.Module | None
    on_device: DeviceImages | None

    def resume(self, model: nn.Module, checkpoint: dict[str, Any]) -> tuple[list[dict[str, float]], float, int, int]:
        """Load a checkpoint's weights and optimiser state; returns its history, best score, best and next epoch."""
        model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["lr_scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        return checkpoint["history"], checkpoint["best"], checkpoint["best_epoch"], checkpoint["epoch"] + 1

    def enter_phase(self, model: nn.Module, *, epoch: int, cfg: TrainConfig) -> None:
        """FixRes: the final epochs at the deployed size start from the EMA weights and keep none of their own
        (an EMA would carry the low resolution's BN statistics into the model that is scored)."""
        if self.ema is None or not cfg.low_res_size or cfg.input_size_at(epoch) != cfg.img_size:
            return
        if cfg.fixres_starts(epoch):
            getattr(model, "module", model).load_state_dict(self.ema.module.state_dict())
            log.info("FixRes: epoch %d onwards at %d px, from the EMA weights", epoch + 1, cfg.img_size)
        self.ema.decay = 0.0  # the "EMA" now follows the model exactly (also after a resume inside the phase)

    def state(self, model: nn.Module) -> dict[str, Any]:
        """The resumable part of a checkpoint, and the weights that were validated (``"evaluated"``)."""
        return {"model": model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.scheduler.state_dict(),
                **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                "evaluated": self.evaluated.state_dict()}


def _setup(model: nn.Module, *, split: PreparedSplit, cfg: TrainConfig, device: torch.device, world: World,
           distillation: Distillation | None) -> _Training:
    """Place the model, freeze its first stages, and build the loss, optimiser, schedule, EMA and DDP wrapper."""
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
    steps_per_epoch = len(train_loader(split, cfg, cfg.seed, world=world, on_device=on_device))
    if cfg.max_train_batches:
        steps_per_epoch = min(steps_per_epoch, cfg.max_train_batches)
    warmup_steps = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = lr_schedule(optimizer, kind=cfg.schedule, warmup_steps=warmup_steps,
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
    return _Training(trained, evaluated, criterion, optimizer, scheduler, frozen_norms, ema, on_device)


def _validate(evaluated: nn.Module, split: PreparedSplit, row: dict[str, float], *, cfg: TrainConfig,
              device: torch.device, world: World) -> np.ndarray:
    """Score ``evaluated`` on the validation rows (all ranks together) into ``row``; returns the logits."""
    val_logits, val_labels = split_logits(evaluated, split, "val", batch_size=cfg.batch_size * 2, device=device,
                                          channels_last=cfg.channels_last, world=world)
    val = evaluate_predictions(val_labels, calibrated_softmax(val_logits))
    row.update({f"val_{k}": v for k, v in val.metrics.items()})
    return val_logits


def _cpu_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _log_epoch(row: dict[str, float], *, epoch: int, cfg: TrainConfig, has_val: bool, best: bool) -> None:
    log.info("epoch %d/%d  loss %.4f  train acc %.3f%s%s  (%.0f img/s, %.0fs)", epoch + 1, cfg.epochs,
             row["train_loss"], row["train_accuracy"],
             f"  val acc {row['val_accuracy']:.3f}  val bal-acc {row['val_balanced_accuracy']:.3f}"
             if has_val else "", "  *best*" if best else "", row["train_images_per_s"], row["epoch_seconds"])
