"""One group's model, built once for every quantization mode of the group: pruned and fine-tuned (recovery,
optionally distilled or sparse-trained first), or trained again from ImageNet weights (prune-then-train, lower
resolution), then exported to ONNX."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.artifacts.card import (
    load_trained_model,
)
from core.artifacts.records import ExportCheck
from core.compress.distill import Distillation
from core.compress.export import check_export, export_onnx
from core.compress.modes import mode_of
from core.compress.prune import (
    count_macs_params,
    group_sparsity_regularizer,
    linear_probe,
    prune_to_macs,
    recalibrate_batchnorm,
    structured_prune,
    unstructured_prune,
    weight_sparsity,
)
from core.data.prepare import PreparedSplit
from core.data.split import apply_split
from core.data.transforms import preprocessing_for
from core.jobs.sweep.config import Group, SweepConfig
from core.models import create_model
from core.runtime import resolve_device, seed_everything
from core.train import loop
from core.train.config import TrainConfig
from core.train.parent import Parent

log = logging.getLogger(__name__)


def step_epochs(total: int, steps: int) -> list[int]:
    """``total`` fine-tuning epochs shared over ``steps`` pruning steps (later steps get the remainder)."""
    return [total // steps + (1 if i >= steps - total % steps else 0) for i in range(steps)]


def _recovery_cfg(parent: Parent, cfg: SweepConfig, *, epochs: int, ema_decay: float) -> TrainConfig:
    """The parent's recipe with the sweep's own recovery settings (every pruned layer trainable by default)."""
    return dataclasses.replace(parent.train_cfg, epochs=epochs, lr=cfg.finetune_lr,
                               warmup_epochs=cfg.finetune_warmup_epochs, patience=0, pretrained=False,
                               ema_decay=ema_decay, freeze_stages=cfg.finetune_freeze_stages)


def _teacher(parent: Parent, group: Group, cfg: SweepConfig, info: dict[str, Any]) -> Distillation | None:
    """The dense parent as a distillation teacher for a distilled group's recovery (recorded in ``info``)."""
    if not group.distilled or cfg.finetune_epochs == 0:
        return None
    teacher, _, _ = load_trained_model(parent.model_dir)  # a fresh dense copy: the student is pruned in place
    info["distillation"] = {"alpha": cfg.distill_alpha, "temperature": cfg.distill_temperature,
                            "teacher_run_id": parent.run_id}
    return Distillation(teacher, alpha=cfg.distill_alpha, temperature=cfg.distill_temperature)


def _recover(model: nn.Module, *, parent: Parent, cfg: SweepConfig, epochs: int, step: int,
             distillation: Distillation | None, info: dict[str, Any]) -> None:
    """Fine-tune the pruned ``model`` in place for ``epochs`` (pruning step ``step``), keeping its best epoch on
    validation (a refit parent, which has none: its last)."""
    if epochs == 0:
        return
    train_cfg = _recovery_cfg(parent, cfg, epochs=epochs, ema_decay=cfg.finetune_ema_decay)
    seed_everything(train_cfg.seed + step)
    fitted = loop.fit(model, split=parent.split, cfg=train_cfg, device=resolve_device(train_cfg.device),
                 distillation=distillation, select_best="val" in parent.scored_splits)  # a refit parent: last epoch
    if fitted.best_state is not None:
        model.load_state_dict(fitted.best_state)
    model.to("cpu")
    done = len(info["history"])  # epochs count on across steps, so the history reads as one fine-tuning
    info["history"] += [{**row, "epoch": done + i, "pruning_step": step} for i, row in enumerate(fitted.history)]


def _sparse_training(model: nn.Module, *, parent: Parent, cfg: SweepConfig, example: torch.Tensor,
                     info: dict[str, Any]) -> None:
    """Group-sparsity regularised training before pruning (torch-pruning's group regularisation), in place."""
    sparse_cfg = _recovery_cfg(parent, cfg, epochs=cfg.sparse_epochs, ema_decay=0.0)
    regularize = group_sparsity_regularizer(model, example_input=example, reg=cfg.sparse_reg,
                                            keep_residual_stream=not cfg.prune_residual_stream)
    seed_everything(sparse_cfg.seed)
    fitted = loop.fit(model, split=parent.split, cfg=sparse_cfg, device=resolve_device(sparse_cfg.device),
                 after_backward=regularize, select_best=False)
    model.to("cpu")
    info["sparse_training"] = {"epochs": cfg.sparse_epochs, "reg": cfg.sparse_reg, "lr": cfg.finetune_lr}
    info["history"] += [{**row, "sparse_training": 1} for row in fitted.history]  # before the pruning


def _prune_and_finetune(parent: Parent, group: Group, cfg: SweepConfig) -> tuple[nn.Module, dict[str, Any]]:
    model, card, _ = load_trained_model(parent.model_dir)
    size = card.preprocessing.input_size
    info: dict[str, Any] = {"pruning": group.kind, "pruning_ratio": group.amount, "history": []}
    if group.amount == 0:
        return model, info
    if group.spec.amount == "sparsity":
        info["sparsity"] = unstructured_prune(model, amount=group.amount)
        return model, info
    example = torch.randn(1, 3, min(64, size), min(64, size))
    epochs = step_epochs(cfg.finetune_epochs, group.steps)
    distillation = _teacher(parent, group, cfg, info)
    if group.steps > 1:
        info["iterative"] = {"steps": group.steps, "epochs_per_step": epochs}

    def finetune(step: int) -> None:
        _recover(model, parent=parent, cfg=cfg, epochs=epochs[step], step=step, distillation=distillation, info=info)

    grad_batches = ((lambda: _grad_batches(parent.split, parent.train_cfg.seed)) if cfg.importance == "taylor"
                    else None)
    if group.spec.amount == "macs":
        if group.sparse:
            _sparse_training(model, parent=parent, cfg=cfg, example=example, info=info)
        report = prune_to_macs(model, keep=group.amount, example_input=example, importance=cfg.importance,
                               max_layer_ratio=cfg.max_layer_ratio, keep_residual_stream=not cfg.prune_residual_stream,
                               grad_batches=grad_batches)
        info.update(macs_budget=group.amount, max_layer_ratio=cfg.max_layer_ratio,
                    residual_stream_kept=not cfg.prune_residual_stream)
        finetune(0)
    else:
        report = structured_prune(model, ratio=group.amount, example_input=example, importance=cfg.importance,
                                  global_pruning=cfg.global_pruning, iterative_steps=group.steps,
                                  grad_batches=grad_batches, after_step=finetune)
    info["finetune"] = {"epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr, "ema_decay": cfg.finetune_ema_decay,
                        "warmup_epochs": cfg.finetune_warmup_epochs, "freeze_stages": cfg.finetune_freeze_stages,
                        "kept": "best validation epoch" if "val" in parent.scored_splits else "last epoch"}
    info.update(params_before=report.params_before, params_after=report.params_after,
                macs_before=report.macs_before, macs_after=report.macs_after)
    return model.eval(), info


def _train_from_pretrained(parent: Parent, group: Group, cfg: SweepConfig
                           ) -> tuple[nn.Module, dict[str, Any], PreparedSplit]:
    """A "retrained" or "resolution" cell's model: the ImageNet-pretrained network (pruned to the budget first, or
    at a lower input size) trained on the parent's split with the parent's whole recipe."""
    recipe = parent.train_cfg
    size = int(group.amount) if group.spec.amount == "pixels" else parent.split.prep.input_size
    seed_everything(recipe.seed)
    model = create_model(group.architecture, pretrained=recipe.pretrained, drop_rate=recipe.drop_rate)
    prep = preprocessing_for(model, size)
    split = parent.split
    if prep != parent.split.prep:  # the same rows, decoded for this input size
        data = recipe.prepare(prep)
        split = PreparedSplit(data, apply_split(data.table, parent.split.table), prep)
    parent_model, _, _ = load_trained_model(parent.model_dir)
    parent_size = parent.split.prep.input_size
    parent_macs = count_macs_params(parent_model, torch.randn(1, 3, parent_size, parent_size))[0]
    info: dict[str, Any] = {"pruning": group.kind, "pruning_ratio": 0.0, "history": [],
                            "trained_from": "ImageNet weights" if recipe.pretrained else "scratch",
                            "architecture": group.architecture, "input_size": size, "macs_before": parent_macs}
    if group.spec.amount == "macs":
        own = count_macs_params(model, torch.randn(1, 3, parent_size, parent_size))[0]
        keep = group.amount * parent_macs / own
        if keep < 1:
            example = torch.randn(1, 3, min(64, size), min(64, size))
            if cfg.importance == "taylor":  # the fresh head is zero: Taylor needs one that has seen the task
                images, steps, lr = 512, 200, 0.01
                x, y = split.arrays("train", images, seed=recipe.seed)
                loss = linear_probe(model, torch.from_numpy(x), torch.from_numpy(y).long(), steps=steps, lr=lr)
                info["head_probe"] = {"images": images, "steps": steps, "lr": lr, "loss": loss}
            report = prune_to_macs(model, keep=keep, example_input=example, importance=cfg.importance,
                                   max_layer_ratio=cfg.max_layer_ratio,
                                   keep_residual_stream=not cfg.prune_residual_stream,
                                   grad_batches=(lambda: _grad_batches(split, recipe.seed))
                                   if cfg.importance == "taylor" else None)
            info.update(params_before=report.params_before, params_after=report.params_after)
            x, _ = split.arrays("train", 512, seed=recipe.seed)  # eval preprocessing: statistics of clean images
            info["batchnorm_recalibrated_on"] = recalibrate_batchnorm(
                model, (torch.from_numpy(x[i:i + 64]) for i in range(0, len(x), 64)))
        info.update(macs_budget=group.amount, max_layer_ratio=cfg.max_layer_ratio,
                    residual_stream_kept=not cfg.prune_residual_stream)
    train_cfg = dataclasses.replace(recipe, model=group.architecture, img_size=size, pretrained=False)
    fitted = loop.fit(model, split=split, cfg=train_cfg, device=resolve_device(recipe.device),
                 select_best="val" in parent.scored_splits)  # a refit parent has no validation split
    if fitted.best_state is not None:
        model.load_state_dict(fitted.best_state)
    info["history"] = fitted.history
    info["recipe"] = {"epochs": recipe.epochs, "lr": recipe.lr, "freeze_stages": recipe.freeze_stages}
    info["macs_after"] = count_macs_params(model.to("cpu"), torch.randn(1, 3, size, size))[0]
    return model.eval(), info, split


def _grad_batches(split: PreparedSplit, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few training batches for Taylor importance."""
    x, y = split.arrays("train", 64, seed=seed)
    return [(torch.from_numpy(x[i:i + 16]), torch.from_numpy(y[i:i + 16])) for i in range(0, len(x), 16)]


@dataclass(kw_only=True)
class BuiltGroup:
    """One pruned (and fine-tuned) model of a group, ready to be turned into its quantized cells."""

    model: nn.Module
    info: dict[str, Any]
    params: int
    macs: float
    sparsity: float
    work: Path  # scratch folder: the fp32 ONNX export every ONNX mode starts from
    export: ExportCheck | None
    calibration: np.ndarray | None
    split: PreparedSplit  # the parent's, or the same rows at the cell's own input size
    build_seconds: float  # pruning + fine-tuning, or the whole training of a retrained cell


def build_group(parent: Parent, *, group: Group, todo: list[str], cfg: SweepConfig) -> BuiltGroup:
    """Prune + fine-tune (or train) once, export once, draw the calibration images once, for every mode in
    ``todo``."""
    start = time.perf_counter()
    if group.spec.route == "retrain":
        model, info, split = _train_from_pretrained(parent, group, cfg)
    else:
        (model, info), split = _prune_and_finetune(parent, group, cfg), parent.split
    build_seconds = time.perf_counter() - start
    size = split.prep.input_size
    macs, params = count_macs_params(model, torch.randn(1, 3, size, size))
    work = Path(cfg.variants_dir) / parent.run_id / f"_work-{group.variant('x')}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    check = None
    if any(mode_of(m).route != "torch" for m in todo):
        exporter = export_onnx(model, work / "fp32.onnx", input_size=size)
        sample = torch.from_numpy(split.arrays("test", 32)[0])
        check = check_export(model, work / "fp32.onnx", sample, exporter=exporter)
        log.info("ONNX export (%s): max |logit diff| %.2e, top-1 agreement %.3f", exporter,
                 check.max_abs_logit_diff, check.top1_agreement)
    calibration = (split.arrays("train", cfg.calibration_images, seed=1)[0]
                   if any(mode_of(m).calibrated for m in todo) else None)
    return BuiltGroup(model=model, info=info, params=params, macs=macs, sparsity=weight_sparsity(model), work=work,
                      export=check, calibration=calibration, split=split, build_seconds=build_seconds)
