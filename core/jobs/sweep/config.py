"""The sweep's grid: its config (YAML + flags), the groups of cells it plans, shards and the sweep id."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass

from core.calibration import DEFAULT_TARGET_ACCURACY
from core.compress.kinds import DENSE_FAMILY, Kind, kind_of
from core.compress.modes import MODES
from core.compress.prune import (
    IMPORTANCES,
)
from core.compress.quantize import (
    CALIBRATION_METHODS,
    EXCLUDE_PRESETS,
)
from core.config import option
from core.errors import ConfigError
from core.models import ARCHITECTURES
from core.store.results import DEFAULT_DB

log = logging.getLogger(__name__)


@dataclass
class SweepConfig:
    """Every setting of a sweep; YAML keys and CLI flags are these field names."""

    train_config: str = option("configs/demo.yaml", "TrainConfig YAML: data, split, dense training, fine-tuning")
    models: list[str] = option(["test_efficientnet"], "architectures", choices=tuple(ARCHITECTURES))
    parents: list[str] = option([], "existing dense runs as MODEL=RUN_ID_OR_FOLDER (otherwise one is trained)")
    ratios: list[float] = option([0.0, 0.25, 0.5, 0.7], "structured pruning ratios (0 = dense)")
    macs_keep: list[float] = option([], "MAC budgets: prune (global ranking) until at most this fraction of the dense "
                                        "MACs is left; each makes 'macs-<f>' cells (1: nothing removed, the recovery "
                                        "alone: with distillation, the parent distilled into a copy of itself)")
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
    modes: list[str] = option(["torch_fp32", "fp32", "static"], "quantization modes", choices=MODES)
    unstructured: list[float] = option([], "unstructured magnitude-pruning amounts (fp32 ONNX, no fine-tuning)")
    importance: str = option("magnitude", "channel importance", choices=IMPORTANCES)
    recipe_tag: str = option("", "a name for this sweep's recovery recipe, appended to its pruned cells' names "
                                 "(e.g. 'e12' for 12 recovery epochs): another recipe's cells are their own, never "
                                 "taken for stored ones (letters and digits)")
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
            if not 0 < k <= 1:
                raise ConfigError(f"MAC budgets must be in (0, 1] (a fraction of the dense MACs), got {k}")
        for k in self.prune_then_train:
            if not 0 < k <= 1:
                raise ConfigError(f"prune-then-train budgets must be in (0, 1] (a fraction of the dense parent's "
                                  f"MACs), got {k}")
        for px in self.resolutions:
            if not 16 <= px <= 1024:
                raise ConfigError(f"resolutions are input sizes in pixels (16 to 1024), got {px}")
        if self.recipe_tag and not self.recipe_tag.isalnum():
            raise ConfigError(f"recipe_tag must be letters and digits (it is part of cell names), got "
                              f"{self.recipe_tag!r}")
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
    kind: str  # a key of core.compress.kinds.KINDS
    amount: float  # ratio, MAC budget, sparsity, or input size in pixels ("resolution")
    modes: tuple[str, ...]
    distilled: bool = False  # fine-tuned with the dense parent as teacher: its own cells ("-kd")
    steps: int = 1  # pruned in this many steps with fine-tuning after each: its own cells ("-itN")
    arch: str = ""  # "retrained": the architecture pruned and trained, when it is not the parent's
    sparse: bool = False  # "budget": sparse training before pruning, its own cells ("-sl")
    importance: str = ""  # channel importance other than the default (magnitude): its own cells ("-taylor")
    tag: str = ""  # the sweep's recipe_tag: another recovery recipe, its own cells ("-e12")

    def _options(self, sep: str) -> str:
        return ((f"{sep}it{self.steps}" if self.steps > 1 else "") + (f"{sep}sl" if self.sparse else "")
                + (f"{sep}kd" if self.distilled else "") + (f"{sep}{self.importance}" if self.importance else "")
                + (f"{sep}{self.tag}" if self.tag else ""))

    @property
    def architecture(self) -> str:
        return self.arch or self.model

    @property
    def spec(self) -> Kind:
        return kind_of(self.kind)

    @property
    def dense(self) -> bool:
        """The parent's own cells: structured pruning at ratio 0."""
        return self.kind == "structured" and self.amount == 0

    @property
    def family(self) -> str:
        """How the cell was made smaller: what the Pareto table compares at equal MACs."""
        return DENSE_FAMILY if self.dense else self.spec.family

    def variant(self, mode: str) -> str:
        if self.dense:
            return f"dense-{mode}"
        arch = f"{self.arch}-" if self.arch else ""
        return f"{self.spec.variant_prefix}-{arch}{self.amount:g}{self._options('-')}-{mode}"

    def cell_id(self, parent: str, mode: str) -> str:
        return f"{parent}.{self.spec.cell_prefix}{self.arch}{self.amount:g}{self._options('')}.{mode}"


def mode_label(mode: str, cfg: SweepConfig) -> str:
    """The mode as named in variants: static int8 with non-default options says which (its own cell)."""
    if MODES[mode].onnx_quantize != "static":
        return mode
    parts = [mode]
    if cfg.calibration_method != "minmax":
        parts.append(cfg.calibration_method)
    if cfg.static_exclude == "depthwise":
        parts.append("keepdw")
    if cfg.static_exclude == "sensitive":
        parts.append(f"keep{cfg.static_keep_fp32}")
    if not cfg.per_channel:
        parts.append("pertensor")
    return "-".join(parts)


def plan_groups(cfg: SweepConfig) -> list[Group]:
    """The whole grid in a fixed order (the same on every machine, so shards partition it)."""
    groups = []
    labels = tuple(mode_label(m, cfg) for m in cfg.modes)
    importance = "" if cfg.importance == "magnitude" else cfg.importance  # the default names no cells
    for model in cfg.models:
        groups += [Group(model, "structured", r, labels, distilled=cfg.distill_alpha > 0 and r > 0,
                         steps=cfg.iterative_steps if r > 0 else 1, importance=importance if r > 0 else "",
                         tag=cfg.recipe_tag if r > 0 else "")
                   for r in sorted(set(cfg.ratios))]
        groups += [Group(model, "budget", k, labels, distilled=cfg.distill_alpha > 0, sparse=cfg.sparse_epochs > 0,
                         importance=importance, tag=cfg.recipe_tag) for k in sorted(set(cfg.macs_keep), reverse=True)]
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
