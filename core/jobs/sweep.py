"""The compression sweep: models x pruning ratios x quantization modes, every cell measured and stored.

Each cell is a deployable variant folder (``<variants_dir>/<parent_run_id>/<variant>/``) and a run in the
results store whose parent is the dense training run. Cells are evaluated on the parent's validation split
(which chooses what to deploy) and test split (which reports it) with the full metric set, sized (bytes of
the artifact) and timed (batch 1, fixed threads, median and IQR).

Work is grouped by (model, pruning): one prune + fine-tune serves all quantization modes of that ratio.
Completed cells are skipped on a rerun (resumable); a cell is stored only once all of it exists.
``shard="i/n"`` runs the groups whose index is i modulo n, so a grid can be spread over machines.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from core.artifacts.card import (
    DATA_LICENCE,
    VARIANT_CARD_NAME,
    Card,
    load_trained_model,
    read_trained_card,
    read_variant_card,
    resolve_model_dir,
    write_variant,
)
from core.artifacts.mobile_runtimes import runtime_of, runtime_version
from core.calibration import DEFAULT_TARGET_ACCURACY
from core.compress import QUANT_MODES
from core.compress.distill import Distillation
from core.compress.export import ExportCheck, check_export, export_onnx
from core.compress.latency import Latency, predictor_latency
from core.compress.mobile import MOBILE_MODES, OPERATORS_FILE, export_mobile, is_int8
from core.compress.prune import (
    IMPORTANCES,
    count_macs_params,
    group_sparsity_regularizer,
    prune_to_macs,
    recalibrate_batchnorm,
    structured_prune,
    unstructured_prune,
    weight_sparsity,
)
from core.compress.qat import export_qat_onnx, graph_logits, quantization_aware_finetune
from core.compress.quantize import (
    CALIBRATION_METHODS,
    EXCLUDE_PRESETS,
    quantize_onnx,
    torch_dynamic_quantize,
)
from core.config import build_config, option
from core.data.prepare import PreparedSplit, prepare_data
from core.data.split import apply_split
from core.data.synthetic import is_synthetic_dataset
from core.data.transforms import preprocessing_for
from core.errors import ConfigError, ModelError
from core.intervals import interval_metrics, paired_differences
from core.jobs.train import run_training
from core.losses import make_criterion
from core.metrics import Evaluation, evaluate_logits
from core.models import ARCHITECTURES, create_model
from core.provenance import Provenance, git_sha, machine_description
from core.ray_pool import ray_map
from core.runtime import resolve_device, seed_everything
from core.serve.deployed import Scores
from core.serve.facts import card_metrics, training_data
from core.serve.predict import (
    MobilePredictor,
    OnnxPredictor,
    Predictor,
    TorchPredictor,
    load_predictor,
    predict_logits,
    probabilities,
)
from core.store.results import DEFAULT_DB, Predictions, ResultsStore, RunRecord
from core.train.config import TrainConfig
from core.train.loaders import train_loader
from core.train.loop import fit
from core.train.parent import Parent, load_parent

log = logging.getLogger(__name__)


@dataclass
class SweepConfig:
    """Every setting of a sweep; YAML keys and CLI flags are these field names."""

    train_config: str = option("configs/demo.yaml", "TrainConfig YAML: data, split, dense training, fine-tuning")
    models: list[str] = option(["test_efficientnet"], "architectures", choices=tuple(ARCHITECTURES))
    parents: list[str] = option([], "existing dense runs as MODEL=RUN_ID_OR_FOLDER (otherwise one is trained)")
    ratios: list[float] = option([0.0, 0.25, 0.5, 0.7], "structured pruning ratios (0 = dense)")
    macs_keep: list[float] = option([], "MAC budgets: prune (global ranking) until at most this fraction of the dense "
                                        "MACs is left; each makes 'macs-<f>' cells")
    max_layer_ratio: float = option(0.7, "MAC budgets: at most this share of any one layer's channels is removed")
    prune_residual_stream: bool = option(False, "MAC budgets: also prune the stem, the blocks' projection convs and "
                                                "the head conv (default: keep the residual stream whole)")
    prune_then_train: list[float] = option([], "MAC budgets (fractions of the dense parent's MACs) for "
                                              "prune-then-train cells: the ImageNet-pretrained network pruned to the "
                                              "budget first, then trained with the parent's whole recipe "
                                              "('ptt-<f>' cells)")
    prune_then_train_models: list[str] = option([], "architectures pruned in prune-then-train cells (default: the "
                                                    "parent's); a larger one (efficientnet_lite1) is pruned to the "
                                                    "same share of the *parent's* MACs", choices=tuple(ARCHITECTURES))
    resolutions: list[int] = option([], "input sizes (px) below the parent's: the parent's recipe trained again at "
                                        "each size, no weights removed ('res-<px>' cells: the baseline a pruned "
                                        "cell must beat at equal MACs)")
    sparse_epochs: int = option(0, "MAC budgets: epochs of sparse training (group regularisation) of the parent "
                                   "before pruning ('-sl' cells; 0 = off)")
    sparse_reg: float = option(1e-4, "sparse training: strength of the group-lasso regularisation")
    finetune_warmup_epochs: float = option(0.0, "fine-tuning after pruning: linear warm-up epochs")
    finetune_freeze_stages: int = option(0, "fine-tuning after pruning: stages kept frozen (0: every pruned layer "
                                            "learns to recover; the parent's own freeze_stages is not inherited)")
    modes: list[str] = option(["torch_fp32", "fp32", "static"], "quantization modes", choices=QUANT_MODES)
    unstructured: list[float] = option([], "unstructured magnitude-pruning amounts (fp32 ONNX, no fine-tuning)")
    importance: str = option("magnitude", "channel importance", choices=IMPORTANCES)
    global_pruning: bool = option(False, "rank channels across layers")
    iterative_steps: int = option(1, "prune in this many steps, each followed by its share of finetune_epochs "
                                     "(1 = one-shot; the total fine-tuning budget is the same; > 1 makes '-itN' cells)")
    finetune_epochs: int = option(3, "fine-tuning epochs after pruning (0 = none)")
    finetune_lr: float = option(1e-3, "fine-tuning peak learning rate")
    finetune_ema_decay: float = option(0.0, "weight EMA during fine-tuning (0 = off: a short fine-tune of a pruned "
                                            "network changes fast, and an average over its first epochs lags)")
    distill_alpha: float = option(0.0, "weight of distillation from the dense parent in fine-tuning after pruning "
                                       "(0 = plain fine-tuning; > 0 makes '-kd' cells)")
    distill_temperature: float = option(4.0, "softmax temperature of the distillation targets")
    uncertain_target_accuracy: float = option(DEFAULT_TARGET_ACCURACY, "accuracy on validation asked of predictions "
                                              "shown without the 'uncertain' flag (sets each card's threshold)")
    calibration_images: int = option(64, "training images for static int8 calibration")
    calibration_method: str = option("minmax", "static calibration", choices=tuple(CALIBRATION_METHODS))
    static_exclude: str = option("none", "nodes kept fp32 in static int8", choices=EXCLUDE_PRESETS)
    static_keep_fp32: int = option(8, "static_exclude=sensitive: how many of the most sensitive nodes stay fp32")
    per_channel: bool = option(True, "per-channel int8 weights")
    qat_epochs: int = option(2, "mode qat: epochs of quantization-aware fine-tuning (after pruning's fine-tuning)")
    qat_lr: float = option(1e-4, "mode qat: AdamW learning rate, cosine-decayed over the QAT epochs")
    latency_runs: int = option(20, "timed runs per latency figure")
    threads: int = option(2, "threads for latency (torch and ONNX Runtime)")
    variants_dir: str = option("results/variants", "folder of deployable variant folders")
    db: str = option(str(DEFAULT_DB), "DuckDB results store (a shard writes its own: see shard)")
    shard: str = option("0/1", "run only groups i mod n (i/n, 0-based)")
    ray_cpus: int = option(0, "with --ray and no address: CPUs of the local Ray instance (0 = all)")
    ray_cpus_per_task: int = option(1, "with --ray: CPUs each group task reserves (and its torch threads)")
    ray_gpus_per_task: float = option(0.0, "with --ray: GPUs each group task reserves (fine-tuning runs there)")

    def __post_init__(self) -> None:
        for r in (*self.ratios, *self.unstructured):
            if not 0 <= r < 1:
                raise ConfigError(f"pruning ratios must be in [0, 1), got {r}")
        for k in self.macs_keep:
            if not 0 < k < 1:
                raise ConfigError(f"MAC budgets must be in (0, 1) (a fraction of the dense MACs), got {k}")
        for k in self.prune_then_train:
            if not 0 < k <= 1:
                raise ConfigError(f"prune-then-train budgets must be in (0, 1] (a fraction of the dense parent's "
                                  f"MACs), got {k}")
        for px in self.resolutions:
            if not 16 <= px <= 1024:
                raise ConfigError(f"resolutions are input sizes in pixels (16 to 1024), got {px}")
        if not 0 < self.max_layer_ratio < 1:
            raise ConfigError(f"max_layer_ratio must be in (0, 1), got {self.max_layer_ratio}")
        if self.finetune_freeze_stages < 0 or self.finetune_warmup_epochs < 0:
            raise ConfigError("finetune_freeze_stages and finetune_warmup_epochs must be >= 0")
        if not 0 <= self.distill_alpha <= 1:
            raise ConfigError(f"distill_alpha must be in [0, 1] (0 = off), got {self.distill_alpha}")
        if not 0 < self.uncertain_target_accuracy <= 1:
            raise ConfigError(f"uncertain_target_accuracy must be in (0, 1], got {self.uncertain_target_accuracy}")
        if self.sparse_epochs < 0 or self.sparse_reg <= 0:
            raise ConfigError(f"sparse_epochs must be >= 0 and sparse_reg > 0, got {self.sparse_epochs}, "
                              f"{self.sparse_reg}")
        if self.iterative_steps < 1:
            raise ConfigError(f"iterative_steps must be >= 1 (1 = one-shot pruning), got {self.iterative_steps}")
        if self.iterative_steps > 1 and 0 < self.finetune_epochs < self.iterative_steps:
            raise ConfigError(f"iterative pruning fine-tunes after every step: finetune_epochs "
                              f"({self.finetune_epochs}) must be >= iterative_steps ({self.iterative_steps}) or 0")
        if self.distill_temperature <= 0:
            raise ConfigError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        parse_shard(self.shard)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"shard {text!r}: need n >= 1 and 0 <= i < n")
    return i, n


@dataclass(frozen=True)
class Group:
    """One prune (+ fine-tune) of one model, serving several quantization modes."""

    model: str  # the parent's architecture (which parent the group belongs to)
    kind: str  # one of GROUP_KINDS
    amount: float  # ratio, MAC budget, sparsity, or input size in pixels ("resolution")
    modes: tuple[str, ...]
    distilled: bool = False  # fine-tuned with the dense parent as teacher: its own cells ("-kd")
    steps: int = 1  # pruned in this many steps with fine-tuning after each: its own cells ("-itN")
    arch: str = ""  # "retrained": the architecture pruned and trained, when it is not the parent's
    sparse: bool = False  # "budget": sparse training before pruning, its own cells ("-sl")

    def _options(self, sep: str) -> str:
        return ((f"{sep}it{self.steps}" if self.steps > 1 else "") + (f"{sep}sl" if self.sparse else "")
                + (f"{sep}kd" if self.distilled else ""))

    @property
    def architecture(self) -> str:
        return self.arch or self.model

    @property
    def family(self) -> str:
        """How the cell was made smaller: what the Pareto table compares at equal MACs."""
        if self.kind == "structured" and self.amount == 0:
            return "dense"
        return GROUP_KINDS[self.kind]

    def variant(self, mode: str) -> str:
        if self.kind == "unstructured":
            return f"unstructured-{self.amount:g}-{mode}"
        if self.kind == "budget":
            return f"macs-{self.amount:g}{self._options('-')}-{mode}"
        if self.kind == "retrained":
            return f"ptt-{self.arch + '-' if self.arch else ''}{self.amount:g}-{mode}"
        if self.kind == "resolution":
            return f"res-{self.amount:g}-{mode}"
        return f"dense-{mode}" if self.amount == 0 else f"pruned-{self.amount:g}{self._options('-')}-{mode}"

    def cell_id(self, parent: str, mode: str) -> str:
        prefix = {"unstructured": "u", "budget": "m", "retrained": f"t{self.arch}", "resolution": "r"}.get(
            self.kind, "p")
        return f"{parent}.{prefix}{self.amount:g}{self._options('')}.{mode}"


GROUP_KINDS = {  # kind -> family, as tables and charts name it
    "structured": "pruned (per-layer ratio)",
    "budget": "pruned after training",
    "retrained": "pruned, then trained",
    "resolution": "lower resolution",
    "unstructured": "unstructured sparsity",
}


def mode_label(mode: str, cfg: SweepConfig) -> str:
    """The mode as named in variants: static int8 with non-default options says which (its own cell)."""
    if mode != "static":
        return mode
    parts = ["static"]
    if cfg.calibration_method != "minmax":
        parts.append(cfg.calibration_method)
    if cfg.static_exclude == "depthwise":
        parts.append("keepdw")
    if cfg.static_exclude == "sensitive":
        parts.append(f"keep{cfg.static_keep_fp32}")
    if not cfg.per_channel:
        parts.append("pertensor")
    return "-".join(parts)


TORCH_MODES = ("torch_fp32", "torch_dynamic")  # saved as PyTorch modules; every other mode is an ONNX file


def base_mode(label: str) -> str:
    return label.split("-", 1)[0]


def plan_groups(cfg: SweepConfig) -> list[Group]:
    """The whole grid in a fixed order (the same on every machine, so shards partition it)."""
    groups = []
    labels = tuple(mode_label(m, cfg) for m in cfg.modes)
    for model in cfg.models:
        groups += [Group(model, "structured", r, labels, distilled=cfg.distill_alpha > 0 and r > 0,
                         steps=cfg.iterative_steps if r > 0 else 1) for r in sorted(set(cfg.ratios))]
        groups += [Group(model, "budget", k, labels, distilled=cfg.distill_alpha > 0, sparse=cfg.sparse_epochs > 0)
                   for k in sorted(set(cfg.macs_keep), reverse=True)]
        groups += [Group(model, "retrained", k, labels, arch="" if arch == model else arch)
                   for arch in (cfg.prune_then_train_models or [model])
                   for k in sorted(set(cfg.prune_then_train), reverse=True)]
        groups += [Group(model, "resolution", px, labels) for px in sorted(set(cfg.resolutions), reverse=True)]
        groups += [Group(model, "unstructured", a, ("fp32",)) for a in sorted(set(cfg.unstructured)) if a > 0]
    return groups


def shard_groups(groups: list[Group], shard: str) -> list[Group]:
    i, n = parse_shard(shard)
    return [g for k, g in enumerate(groups) if k % n == i]


def sweep_id(cfg: SweepConfig) -> str:
    """Identity of a sweep's grid (independent of sharding and output store)."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("shard", "db") and not k.startswith("ray_")}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _resolve_parents(cfg: SweepConfig, train_cfg: TrainConfig) -> dict[str, str]:
    """Model -> dense run folder: given, remembered from an earlier run of this sweep, or trained now."""
    given = {}
    for item in cfg.parents:
        model, sep, ref = item.partition("=")
        if not sep or model not in cfg.models:
            raise ConfigError(f"parents entries look like MODEL=RUN_ID with MODEL in {cfg.models}, got {item!r}")
        given[model] = str(resolve_model_dir(ref, models_dir=train_cfg.output_dir))
    memo = Path(cfg.variants_dir) / f"sweep-{sweep_id(cfg)}-parents.json"
    remembered = json.loads(memo.read_text()) if memo.is_file() else {}
    missing = [m for m in cfg.models if m not in given and m not in remembered]
    if missing and parse_shard(cfg.shard)[1] > 1:
        raise ConfigError(f"sharded sweeps need existing dense runs for every model (parents: MODEL=RUN_ID); "
                          f"missing: {', '.join(missing)}")
    for model in missing:
        log.info("training the dense parent for %s", model)
        result = run_training(dataclasses.replace(train_cfg, model=model, db=cfg.db))
        remembered[model] = str(result.run_dir)
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(remembered, indent=2))
    return {m: given.get(m) or remembered[m] for m in cfg.models}


def step_epochs(total: int, steps: int) -> list[int]:
    """``total`` fine-tuning epochs shared over ``steps`` pruning steps (later steps get the remainder)."""
    return [total // steps + (1 if i >= steps - total % steps else 0) for i in range(steps)]


def _prune_and_finetune(parent: Parent, group: Group, cfg: SweepConfig) -> tuple[nn.Module, dict[str, Any]]:
    model, card, _ = load_trained_model(parent.model_dir)
    size = card.preprocessing.input_size
    info: dict[str, Any] = {"pruning": group.kind, "pruning_ratio": group.amount, "history": []}
    if group.amount == 0:
        return model, info
    if group.kind == "unstructured":
        info["sparsity"] = unstructured_prune(model, amount=group.amount)
        return model, info
    example = torch.randn(1, 3, min(64, size), min(64, size))
    epochs = step_epochs(cfg.finetune_epochs, group.steps)
    distillation = None
    if group.distilled and cfg.finetune_epochs > 0:
        teacher, _, _ = load_trained_model(parent.model_dir)  # a fresh dense copy: ``model`` is pruned in place
        distillation = Distillation(teacher, alpha=cfg.distill_alpha, temperature=cfg.distill_temperature)
        info["distillation"] = {"alpha": cfg.distill_alpha, "temperature": cfg.distill_temperature,
                                "teacher_run_id": parent.run_id}
    if group.steps > 1:
        info["iterative"] = {"steps": group.steps, "epochs_per_step": epochs}

    def grad_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
        return _grad_batches(parent.split, parent.train_cfg.seed)

    def recovery_cfg(epochs_now: int, ema_decay: float) -> TrainConfig:
        """The parent's recipe with the sweep's own recovery settings (every pruned layer trainable by default)."""
        return dataclasses.replace(parent.train_cfg, epochs=epochs_now, lr=cfg.finetune_lr,
                                   warmup_epochs=cfg.finetune_warmup_epochs, patience=0, pretrained=False,
                                   ema_decay=ema_decay, freeze_stages=cfg.finetune_freeze_stages)

    def finetune(step: int) -> None:
        if epochs[step] == 0:
            return
        train_cfg = recovery_cfg(epochs[step], cfg.finetune_ema_decay)
        seed_everything(train_cfg.seed + step)
        fitted = fit(model, split=parent.split, cfg=train_cfg, device=resolve_device(train_cfg.device),
                     distillation=distillation)
        if fitted.best_state is not None:
            model.load_state_dict(fitted.best_state)
        model.to("cpu")
        done = len(info["history"])  # epochs count on across steps, so the history reads as one fine-tuning
        info["history"] += [{**row, "epoch": done + i, "pruning_step": step} for i, row in enumerate(fitted.history)]

    if group.kind == "budget" and group.sparse:
        sparse_cfg = recovery_cfg(cfg.sparse_epochs, 0.0)
        regularize = group_sparsity_regularizer(model, example_input=example, reg=cfg.sparse_reg,
                                                keep_residual_stream=not cfg.prune_residual_stream)
        seed_everything(sparse_cfg.seed)
        fitted = fit(model, split=parent.split, cfg=sparse_cfg, device=resolve_device(sparse_cfg.device),
                     after_backward=regularize, select_best=False)
        model.to("cpu")
        info["sparse_training"] = {"epochs": cfg.sparse_epochs, "reg": cfg.sparse_reg, "lr": cfg.finetune_lr}
        info["history"] += [{**row, "sparse_training": 1} for row in fitted.history]  # before the pruning
    if group.kind == "budget":
        report = prune_to_macs(model, keep=group.amount, example_input=example, importance=cfg.importance,
                               max_layer_ratio=cfg.max_layer_ratio, keep_residual_stream=not cfg.prune_residual_stream,
                               grad_batches=grad_batches if cfg.importance == "taylor" else None)
        info.update(macs_budget=group.amount, max_layer_ratio=cfg.max_layer_ratio,
                    residual_stream_kept=not cfg.prune_residual_stream)
        finetune(0)
    else:
        report = structured_prune(model, ratio=group.amount, example_input=example, importance=cfg.importance,
                                  global_pruning=cfg.global_pruning, iterative_steps=group.steps,
                                  grad_batches=grad_batches if cfg.importance == "taylor" else None,
                                  after_step=finetune)
    info["finetune"] = {"epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr,
                        "warmup_epochs": cfg.finetune_warmup_epochs, "freeze_stages": cfg.finetune_freeze_stages}
    info.update(params_before=report.params_before, params_after=report.params_after,
                macs_before=report.macs_before, macs_after=report.macs_after)
    return model.eval(), info


def _train_from_pretrained(parent: Parent, group: Group, cfg: SweepConfig
                           ) -> tuple[nn.Module, dict[str, Any], PreparedSplit]:
    """A "retrained" or "resolution" cell's model: the ImageNet-pretrained network (pruned to the budget first, or
    at a lower input size) trained on the parent's split with the parent's whole recipe."""
    recipe = parent.train_cfg
    size = int(group.amount) if group.kind == "resolution" else parent.split.prep.input_size
    seed_everything(recipe.seed)
    model = create_model(group.architecture, pretrained=recipe.pretrained, drop_rate=recipe.drop_rate)
    prep = preprocessing_for(model, size)
    split = parent.split
    if prep != parent.split.prep:  # the same rows, decoded for this input size
        data = prepare_data(recipe.data_dir, prep=prep, cache_dir=recipe.cache_dir, skip_bad=recipe.skip_bad,
                            workers=recipe.workers)
        split = PreparedSplit(data, apply_split(data.table, parent.split.table), prep)
    parent_model, _, _ = load_trained_model(parent.model_dir)
    parent_size = parent.split.prep.input_size
    parent_macs = count_macs_params(parent_model, torch.randn(1, 3, parent_size, parent_size))[0]
    info: dict[str, Any] = {"pruning": group.kind, "pruning_ratio": 0.0, "history": [],
                            "trained_from": "ImageNet weights" if recipe.pretrained else "scratch",
                            "architecture": group.architecture, "input_size": size, "macs_before": parent_macs}
    if group.kind == "retrained":
        own = count_macs_params(model, torch.randn(1, 3, parent_size, parent_size))[0]
        keep = group.amount * parent_macs / own
        if keep < 1:
            example = torch.randn(1, 3, min(64, size), min(64, size))
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
    fitted = fit(model, split=split, cfg=train_cfg, device=resolve_device(recipe.device))
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


@dataclass
class _Built:
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


def build_group(parent: Parent, *, group: Group, todo: list[str], cfg: SweepConfig) -> _Built:
    """Prune + fine-tune (or train) once, export once, draw the calibration images once, for every mode in
    ``todo``."""
    start = time.perf_counter()
    if group.kind in ("retrained", "resolution"):
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
    if any(base_mode(m) not in TORCH_MODES for m in todo):
        exporter = export_onnx(model, work / "fp32.onnx", input_size=size)
        sample = torch.from_numpy(split.arrays("test", 32)[0])
        check = check_export(model, work / "fp32.onnx", sample, exporter=exporter)
        log.info("ONNX export (%s): max |logit diff| %.2e, top-1 agreement %.3f", exporter,
                 check.max_abs_logit_diff, check.top1_agreement)
    calibration = (split.arrays("train", cfg.calibration_images, seed=1)[0]
                   if any(base_mode(m) == "static" or is_int8(base_mode(m)) for m in todo) else None)
    return _Built(model, info, params, macs, weight_sparsity(model), work, check, calibration, split, build_seconds)


def make_cell(parent: Parent, *, group: Group, label: str, built: _Built, cfg: SweepConfig) -> tuple[Predictor, Path]:
    """The deployable file of one cell in its folder, and the one predictor that measures it."""
    mode = base_mode(label)
    folder = Path(cfg.variants_dir) / parent.run_id / group.variant(label)
    if folder.exists():
        shutil.rmtree(folder)  # a leftover of an interrupted run: never stored, rebuilt from scratch
    folder.mkdir(parents=True)
    split = built.split
    card = Card(run_id=group.cell_id(parent.run_id, label), architecture=group.architecture,
                preprocessing=split.prep, variant=group.variant(label), parent_run_id=parent.run_id,
                extra={"pruning": group.kind, "pruning_ratio": group.amount, "quantization": mode,
                       "split_hash": split.hash, "dataset_fingerprint": split.data.fingerprint,
                       "git_sha": git_sha(), "seed": parent.train_cfg.seed, "data_licence": DATA_LICENCE,
                       "parent_dir": str(parent.model_dir.resolve()), "params": built.params, "macs": built.macs,
                       "sparsity": built.sparsity,
                       "distillation": built.info.get("distillation"),
                       "training_data": training_data(data_dir=parent.train_cfg.data_dir,
                                                      synthetic=is_synthetic_dataset(parent.train_cfg.data_dir),
                                                      images=len(split.rows("train")))})
    if mode == "qat":
        card.extra["qat"] = {"epochs": cfg.qat_epochs, "lr": cfg.qat_lr,
                             "flow": "torchao PT2E, X86InductorQuantizer (per-channel int8 weights), ONNX QDQ"}
        train_cfg = parent.train_cfg
        selection: list[dict[str, float]] = []

        def converted_val_balanced_accuracy(graph: nn.Module) -> float:
            logits, labels = graph_logits(graph, split.loader("val", batch_size=64))
            return float(balanced_accuracy_score(labels.numpy(), logits.argmax(1).numpy()))

        converted = quantization_aware_finetune(
            copy.deepcopy(built.model),
            batches=lambda epoch: train_loader(split, train_cfg, train_cfg.seed + epoch),
            criterion=make_criterion(train_cfg.imbalance, split.labels("train"),
                                     label_smoothing=train_cfg.label_smoothing,
                                     logit_adjust_tau=train_cfg.logit_adjust_tau),
            epochs=cfg.qat_epochs, lr=cfg.qat_lr, example=torch.from_numpy(split.arrays("train", 4)[0]),
            max_batches=train_cfg.max_train_batches, score=converted_val_balanced_accuracy, history=selection)
        card.extra["qat"]["selection"] = {"on": "converted graph, val balanced accuracy", "epochs": selection,
                                          "chosen_epoch": max(selection, key=lambda r: r["converted_score"])["epoch"]}
        export_qat_onnx(converted, folder / "model.onnx", input_size=split.prep.input_size)
        card.file = "model.onnx"
        return OnnxPredictor(folder / "model.onnx", card, threads=cfg.threads), folder
    if mode in TORCH_MODES:
        module = torch_dynamic_quantize(copy.deepcopy(built.model)) if mode == "torch_dynamic" else built.model
        module.zero_grad(set_to_none=True)
        torch.save(module, folder / "model.pt")
        card.file = "model.pt"
        return TorchPredictor(module, card), folder
    if mode in MOBILE_MODES:
        return _mobile_cell(card, folder=folder, mode=mode, built=built, cfg=cfg), folder
    _quantized_onnx(built, mode=mode, out=folder / "model.onnx", cfg=cfg)
    card.file = "model.onnx"
    return OnnxPredictor(folder / "model.onnx", card, threads=cfg.threads), folder


def _quantized_onnx(built: _Built, *, mode: str, out: Path, cfg: SweepConfig) -> Path:
    """The group's fp32 ONNX export in ``mode`` (fp32, dynamic, static, fp16), written to ``out``."""
    quantize_onnx(built.work / "fp32.onnx", out, mode=mode, calibration=built.calibration,
                  method=cfg.calibration_method, per_channel=cfg.per_channel, exclude=cfg.static_exclude,
                  keep_fp32=cfg.static_keep_fp32)
    return out


class ExportRejected(ModelError):
    """A phone file that ran back but does not agree with its source: not kept, not reported."""


MIN_FP32_AGREEMENT = 0.99  # an fp32 phone file must give its source's top-1 class on 99% of validation images


def _mobile_cell(card: Card, *, folder: Path, mode: str, built: _Built, cfg: SweepConfig) -> MobilePredictor:
    """Export ``mode``'s phone file, run it back in its runtime, and check it against its source on every validation
    image (top-1 agreement, largest logit difference), recorded in the card; fp32 files below
    :data:`MIN_FP32_AGREEMENT` raise :class:`ExportRejected`. int8 files are judged by their accuracy instead."""
    suffix, source = MOBILE_MODES[mode]
    source_onnx = {}

    def onnx_file(onnx_mode: str) -> Path:
        out = built.work / f"{onnx_mode}.onnx"
        if not out.is_file():
            _quantized_onnx(built, mode=onnx_mode, out=out, cfg=cfg)
        source_onnx[onnx_mode] = out
        return out

    path = export_mobile(mode, folder / f"model{suffix}", model=built.model, onnx_file=onnx_file,
                         input_size=built.split.prep.input_size, calibration=built.calibration)
    card.file = path.name
    operators = path.with_name(OPERATORS_FILE)
    card.extra["runtime"] = {"name": runtime_of(path), "version": runtime_version(path),
                             "operators": operators.name if operators.is_file() else None,
                             "timed_as": "x86 proxy (phones differ)"}
    predictor = MobilePredictor(path, card, threads=cfg.threads)  # a file its runtime cannot load raises here
    reference: Predictor = (OnnxPredictor(next(iter(source_onnx.values())), card, threads=cfg.threads)
                            if source_onnx else TorchPredictor(built.model, card))
    loader = built.split.loader("val", batch_size=64)
    got, _ = predict_logits(predictor, loader)
    want, _ = predict_logits(reference, loader)
    agreement = float(np.mean(got.argmax(1) == want.argmax(1)))
    card.extra["mobile_check"] = {"source": source if source_onnx else "torch", "on": "val",
                                  "max_abs_logit_diff": float(np.abs(got - want).max()), "top1_agreement": agreement}
    log.info("%s: %s %s, top-1 agreement with its source %.4f on %d validation images", card.variant,
             card.extra["runtime"]["name"], card.extra["runtime"]["version"], agreement, len(got))
    if not is_int8(mode) and agreement < MIN_FP32_AGREEMENT:
        raise ExportRejected(f"{card.variant}: agrees with its source on {agreement:.1%} of validation images "
                             f"(< {MIN_FP32_AGREEMENT:.0%}); not kept")
    return predictor


@dataclass
class _Measured:
    evaluations: dict[str, Evaluation]
    predictions: dict[str, Predictions]
    latency: Latency
    paired: dict[str, float]  # delta_<metric> (+ interval) vs the dense parent, on val and test pooled


def measure_cell(predictor: Predictor, *, parent: Parent, cfg: SweepConfig, split: PreparedSplit | None = None
                 ) -> _Measured:
    """Accuracy (val chooses what to deploy, test reports it) and latency, through the same predictor.

    ``split``: the cell's own (the parent's rows at another input size); paired differences need the same images.
    """
    split = split or parent.split
    if split is not parent.split and any(
            split.rows(s)["image_id"].tolist() != parent.split.rows(s)["image_id"].tolist() for s in ("val", "test")):
        raise ConfigError("a cell is scored on other images than its parent: paired differences need the same rows")
    evaluations, predictions = {}, {}
    outputs = {name: predict_logits(predictor, split.loader(name, batch_size=64)) for name in ("val", "test")}
    card = predictor.card  # calibrated on validation; the card carries it to every later predictor of this file
    card.calibrate(*outputs["val"], target_accuracy=cfg.uncertain_target_accuracy)
    pooled = []
    for name, (logits, labels) in outputs.items():
        rows = split.rows(name)
        groups = rows["lesion_id"].to_numpy()
        evaluations[name] = evaluate_logits(labels, logits, temperature=card.temperature, groups=groups,
                                            triage=card.triage)
        probs = probabilities(predictor, logits)
        predictions[name] = Predictions(rows["image_id"].tolist(), labels, probs)
        # what the deployed model shows (core.serve.deployed): the "uncertain" share at the card's threshold
        evaluations[name].metrics.update(
            Scores(probs, labels, probs.max(axis=1) < card.uncertain_threshold).deployment_metrics())
        reference = parent.predictions(name)
        evaluations[name].metrics.update(interval_metrics(
            paired_differences(labels, logits.argmax(1), reference, groups=groups), prefix="delta_"))
        pooled.append((labels, logits.argmax(1), reference, groups))
    labels, preds, reference, groups = (np.concatenate(parts) for parts in zip(*pooled, strict=True))
    paired = interval_metrics(paired_differences(labels, preds, reference, groups=groups), prefix="delta_")
    latency = predictor_latency(predictor, input_size=split.prep.input_size, threads=cfg.threads,
                                runs=cfg.latency_runs)
    return _Measured(evaluations, predictions, latency, paired)


def cell_record(parent: Parent, *, group: Group, label: str, built: _Built, predictor: Predictor, folder: Path,
                measured: _Measured, cfg: SweepConfig) -> RunRecord:
    """Write the cell's card (with its figures) and return its run record, a child run of the dense parent."""
    mode = base_mode(label)
    card = predictor.card
    here = machine_description()
    export = (card.extra.pop("mobile_check") if mode in MOBILE_MODES
              else dataclasses.asdict(built.export) if built.export and mode != "torch_fp32" else None)
    card.extra.update(metrics=card_metrics(measured.evaluations),
                      latency_ms={"b1_median": measured.latency.median_ms, "b1_iqr": measured.latency.iqr_ms,
                                  "threads": cfg.threads, **here}, export_check=export)
    write_variant(folder, model_file=str(card.file), card=card)
    size_bytes = card.extra["size_bytes"]
    deploy = {"size_bytes": float(size_bytes), "size_mb": size_bytes / 1e6,
              "latency_b1_ms": measured.latency.median_ms, "latency_b1_iqr_ms": measured.latency.iqr_ms,
              "params": float(built.params), "macs": built.macs, "sparsity": built.sparsity,
              "pruning_ratio": group.amount if group.kind in ("structured", "unstructured") else 0.0,
              "build_seconds": built.build_seconds}
    if "macs_before" in built.info:  # of the dense parent, counted like macs_after on the same input
        deploy["macs_kept"] = built.info["macs_after"] / built.info["macs_before"]
        if group.kind != "structured":  # a budget cell's "ratio" is the share of MACs removed (its budget is named)
            deploy["pruning_ratio"] = 1 - deploy["macs_kept"]
    if export:
        deploy.update(export_max_abs_logit_diff=export["max_abs_logit_diff"],
                      export_top1_agreement=export["top1_agreement"])
    provenance = Provenance.here(dataset=parent.train_cfg.data_dir, dataset_fingerprint=built.split.data.fingerprint,
                                 split_hash=built.split.hash, seed=parent.train_cfg.seed, device=torch.device("cpu"))
    return RunRecord(
        run_id=card.run_id, kind="variant", scalars={"deploy": deploy, "val_test": measured.paired},
        model=group.model,  # the parent's: a larger architecture pruned down is named in the variant and card
        variant=group.variant(label), parent_run_id=parent.run_id, provenance=provenance,
        config={"sweep": dataclasses.asdict(cfg), "sweep_id": sweep_id(cfg), "group": dataclasses.asdict(group),
                "family": group.family, "mode": mode,
                "pruning": {k: v for k, v in built.info.items() if k != "history"},
                "timed_on": here},
        evaluations=measured.evaluations, history=built.info["history"], predictions=measured.predictions,
        artifacts={"model": folder / str(card.file), "card": folder / VARIANT_CARD_NAME},
    )


def store_cell(db: str | Path, record: RunRecord) -> str:
    """Store one finished cell (one transaction: all of it or nothing); the driver is the only writer. The store is
    open only for this write: DuckDB admits no reader beside a writer process, and the dashboard must keep showing
    the store while a sweep runs for hours."""
    with ResultsStore(db) as store:
        store.record_run(record)
    deploy = record.scalars["deploy"]
    log.info("%s %s: test bal-acc %.3f, %.2f MB, %.2f ms (timed on %s)", record.model, record.variant,
             record.evaluations["test"].metrics["balanced_accuracy"], deploy["size_mb"], deploy["latency_b1_ms"],
             record.config["timed_on"]["host"])
    return record.run_id


def pending_modes(db: str | Path, parent_run_id: str, group: Group) -> list[str]:
    """The modes of ``group`` whose cells are not stored yet (what a resumed sweep still has to do)."""
    with ResultsStore(db, read_only=True) as store:
        return [m for m in group.modes if not store.has_run(group.cell_id(parent_run_id, m))]


def iter_cells(parent: Parent, *, group: Group, todo: list[str], cfg: SweepConfig) -> Iterator[RunRecord]:
    """Build (prune, fine-tune, export) once, then make and measure each cell of ``todo``; yields their records."""
    built = build_group(parent, group=group, todo=todo, cfg=cfg)
    for label in todo:
        try:
            predictor, folder = make_cell(parent, group=group, label=label, built=built, cfg=cfg)
        except ExportRejected as exc:
            log.error("%s", exc)
            continue
        measured = measure_cell(predictor, parent=parent, cfg=cfg, split=built.split)
        yield cell_record(parent, group=group, label=label, built=built, predictor=predictor, folder=folder,
                          measured=measured, cfg=cfg)
    shutil.rmtree(built.work)


def run_group(parent: Parent, group: Group, cfg: SweepConfig, *, time_on_driver: bool = False) -> list[str]:
    """Make, measure and store every missing cell of ``group`` (in ``cfg.db``), each as soon as it is done."""
    todo = pending_modes(cfg.db, parent.run_id, group)
    if not todo:
        log.info("%s %s: all cells already stored, skipping", group.model, group.variant("*"))
        return []
    return [store_cell(cfg.db, retime(record, cfg) if time_on_driver else record)
            for record in iter_cells(parent, group=group, todo=todo, cfg=cfg)]


def run_sweep(cfg: SweepConfig, *, ray_address: str | None = None, use_ray: bool = False,
              time_on_driver: bool = False) -> pd.DataFrame:
    """Run (this shard of) the sweep; returns the summary of every cell of this sweep in the store.

    With ``use_ray`` every group of cells is a Ray task (``ray_address``: an existing cluster, ``"auto"``, or
    None for a local instance started and stopped here); this process stays the only writer of the store.
    ``time_on_driver`` re-times every new cell here before it is stored, so latency columns are comparable.
    """
    train_cfg = build_config(TrainConfig, yaml_path=cfg.train_config)
    parents = _resolve_parents(cfg, train_cfg)
    groups = shard_groups(plan_groups(cfg), cfg.shard)
    log.info("sweep %s shard %s: %d group(s), %d cell(s)", sweep_id(cfg), cfg.shard, len(groups),
             sum(len(g.modes) for g in groups))
    ResultsStore(cfg.db).close()  # created (or migrated) now: a store that cannot be written fails before any work
    if use_ray:
        parent_ids = run_groups_on_ray(parents, groups, cfg, address=ray_address, time_on_driver=time_on_driver)
    else:
        loaded: dict[str, Parent] = {}
        for group in groups:
            if group.model not in loaded:
                loaded[group.model] = load_parent(parents[group.model])
            run_group(loaded[group.model], group, cfg, time_on_driver=time_on_driver)
        parent_ids = [p.run_id for p in loaded.values()]
    with ResultsStore(cfg.db, read_only=True) as store:
        return sweep_summary(store, parent_ids)


def group_task(parent_dir: str, group: Group, todo: list[str], cfg: SweepConfig, threads: int) -> list[RunRecord]:
    """Run on a Ray worker: every cell of ``todo`` for ``group``, returned as run records (nothing is stored).

    A task is one group (one prune + fine-tune serving every quantization mode): a task per cell would repeat the
    fine-tuning for every mode. It writes its variant folders under ``variants_dir`` (on a cluster: a path every
    worker can reach).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)  # the CPUs Ray reserved for this task, not every core of the node
    return list(iter_cells(load_parent(parent_dir), group=group, todo=todo, cfg=cfg))


def run_groups_on_ray(parents: dict[str, str], groups: list[Group], cfg: SweepConfig, *, address: str | None,
                      time_on_driver: bool) -> list[str]:
    """Every group with cells left to do as a Ray task; each cell stored as its group finishes, one transaction per
    cell, so an interrupted sweep resumes like a sequential one. Returns the parent run ids."""
    parent_ids = {model: read_trained_card(folder).run_id for model, folder in parents.items()}
    calls = {}
    for i, group in enumerate(groups):
        todo = pending_modes(cfg.db, parent_ids[group.model], group)
        if todo:
            calls[i] = (parents[group.model], group, todo, cfg, cfg.ray_cpus_per_task)
        else:
            log.info("%s %s: all cells already stored, skipping", group.model, group.variant("*"))
    for i, records in ray_map(group_task, calls, address=address, cpus=cfg.ray_cpus or None,
                              cpus_per_task=cfg.ray_cpus_per_task, gpus_per_task=cfg.ray_gpus_per_task):
        for record in records:
            store_cell(cfg.db, retime(record, cfg) if time_on_driver else record)
        log.info("ray: %s %s stored", groups[i].model, groups[i].variant("*"))
    return list(parent_ids.values())


def retime(record: RunRecord, cfg: SweepConfig) -> RunRecord:
    """Measure the cell's latency again on this machine (its card and record updated) before it is stored."""
    folder = Path(record.artifacts["card"]).parent
    predictor = load_predictor(str(folder), threads=cfg.threads)
    latency = predictor_latency(predictor, input_size=predictor.card.preprocessing.input_size, threads=cfg.threads,
                                runs=cfg.latency_runs)
    here = machine_description()
    card = read_variant_card(folder)
    card.extra["latency_ms"] = {"b1_median": latency.median_ms, "b1_iqr": latency.iqr_ms, "threads": cfg.threads,
                                **here, "retimed_on_driver": True}
    write_variant(folder, model_file=str(card.file), card=card)
    record.scalars["deploy"].update(latency_b1_ms=latency.median_ms, latency_b1_iqr_ms=latency.iqr_ms)
    record.config["timed_on"] = {**here, "retimed_on_driver": True,
                                 "built_on": record.config["timed_on"]["host"]}
    return record


def sweep_summary(store: ResultsStore, parent_run_ids: list[str]) -> pd.DataFrame:
    """One row per stored cell of these parents: accuracy figures, size, latency, ratios vs dense torch fp32."""
    from core.store.analysis import variants_frame

    df = variants_frame(store)
    if df.empty or not parent_run_ids:
        return pd.DataFrame()
    df = df[(df["kind"] == "variant") & df["parent_run_id"].isin(parent_run_ids)]
    df = df.rename(columns={"auc_macro_ovr": "auc", "pruning_ratio": "ratio"})
    df["delta_ci"] = [f"[{lo:+.3f}, {hi:+.3f}]" if pd.notna(lo) else "" for lo, hi in
                      zip(df["bal_acc_delta_ci_low"], df["bal_acc_delta_ci_high"], strict=True)]
    return df[["model", "variant", "accuracy", "balanced_accuracy", "auc", "size_mb", "latency_ms", "ratio",
               "size_x", "speed_x", "size_x_onnx", "speed_x_onnx", "bal_acc_delta", "delta_ci"]
              ].reset_index(drop=True)
