"""Training-step throughput on this CPU: the speed-ups of the CPU recipe against plain training, same run.

    python -m scripts.bench_training [--model efficientnet_lite0] [--img-size 128] [--batch-size 32]
    python -m scripts.bench_training --real ../shared/data/ham10000 --batches 40   # the recipe's real epochs

With ``--real``, each setting trains ``--batches`` batches of the real training loop (``core.train.loop``: the
decoded-image cache, augmentation in the data loader, the optimiser step, the EMA) on the real data, the recipe of
``configs/ham10000-cpu.yaml`` as the baseline, and prints images per second and the projected epoch time, with the
CPU's flags.

Each setting times full training steps (forward, backward, AdamW step) on random images with the real
code path (``core.train.loop.make_optimizer``, ``core.models.freeze_stages``); the baseline is the same model
with contiguous tensors and nothing frozen, measured in the same process. Data loading is not included:
the training log's img/s shows what an epoch achieves.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys

import pandas as pd
import torch

from core.cli import run_cli, script_parser
from core.compress.latency import summarize, time_calls
from core.models import ARCHITECTURES, create_model, freeze_stages, keep_frozen_eval
from core.train.config import TrainConfig
from core.train.loop import make_optimizer


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    channels_last: bool
    freeze_stages: int


def step_times(setting: Setting, args: argparse.Namespace) -> list[float]:
    torch.manual_seed(0)
    model = create_model(args.model, pretrained=False).train()
    cfg = TrainConfig(model=args.model, lr=1e-3, channels_last=setting.channels_last,
                      freeze_stages=setting.freeze_stages)
    frozen = freeze_stages(model, cfg.freeze_stages)
    keep_frozen_eval(frozen)
    optimizer = make_optimizer(model, cfg)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    y = torch.randint(0, 7, (args.batch_size,))
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return time_calls(step, warmup=args.warmup, runs=args.steps)


@dataclasses.dataclass(frozen=True)
class EpochSetting:
    name: str
    size: int  # the training input size of the phase
    freeze_stages: int
    workers: int


EPOCH_SETTINGS = (
    EpochSetting("recipe: 160 px, 2 stages frozen, 1 loader worker", 160, 2, 1),
    EpochSetting("recipe, loader in the main process (0 workers)", 160, 2, 0),
    EpochSetting("FixRes low phase: 128 px, 2 stages frozen", 128, 2, 1),
    EpochSetting("full fine-tuning at 128 px", 128, 0, 1),
    EpochSetting("full fine-tuning at 160 px (its FixRes phase)", 160, 0, 1),
)


def cpu_flags() -> str:
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni")
    try:
        with open("/proc/cpuinfo") as info:
            flags = next(line for line in info if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)


def real_epoch_rates(args: argparse.Namespace) -> pd.DataFrame:
    """Images per second of the real training loop for each of :data:`EPOCH_SETTINGS`, one after another."""
    from core.config import build_config
    from core.data.prepare import PreparedSplit, prepare_data
    from core.data.split import make_split
    from core.data.transforms import preprocessing_for
    from core.losses import make_criterion
    from core.train.loaders import train_loader
    from core.train.loop import lr_schedule, train_one_epoch

    recipe = build_config(TrainConfig, yaml_path="configs/ham10000-cpu.yaml",
                          overrides={"data_dir": args.real, "max_train_batches": args.batches,
                                     "cache_dir": args.cache_dir})
    prep = preprocessing_for(create_model(recipe.model, pretrained=False), recipe.img_size)
    data = prepare_data(recipe.data_dir, prep=prep, cache_dir=recipe.cache_dir, workers=1)
    split = PreparedSplit(data, make_split(data.table, seed=recipe.seed), prep)
    rows = []
    for setting in EPOCH_SETTINGS:
        cfg = dataclasses.replace(recipe, freeze_stages=setting.freeze_stages, workers=setting.workers)
        torch.manual_seed(0)
        model = create_model(cfg.model, pretrained=False).to(memory_format=torch.channels_last)
        frozen = freeze_stages(model, cfg.freeze_stages)
        optimizer = make_optimizer(model, cfg)
        scheduler = lr_schedule(optimizer, kind="cosine", warmup_steps=1, total_steps=10_000)
        criterion = make_criterion(cfg.imbalance, split.labels("train"), label_smoothing=cfg.label_smoothing)
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay)
        step = dict(criterion=criterion, optimizer=optimizer, scheduler=scheduler, device=torch.device("cpu"),
                    epoch=0, frozen_norms=frozen, ema=ema)
        warm = dataclasses.replace(cfg, max_train_batches=3)  # first batches: allocator, loader start-up
        train_one_epoch(model, train_loader(split, warm, cfg.seed, size=setting.size), cfg=warm, **step)
        row = train_one_epoch(model, train_loader(split, cfg, cfg.seed + 1, size=setting.size), cfg=cfg, **step)
        images = len(split.rows("train"))
        rate = row["train_images_per_s"]
        fold_images = round((images + len(split.rows("val"))) * 2 / 3)  # a fold model of the 3-fold screening
        rows.append({"setting": setting.name, "img_per_s": rate, "epoch_s_fold": fold_images / rate,
                     "epoch_s_split": images / rate})
    table = pd.DataFrame(rows)
    table["speedup"] = table["img_per_s"] / table["img_per_s"].iloc[0]
    return table


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Training-step throughput benchmark", add_help=add_help)
    parser.add_argument("--model", default="efficientnet_lite0", choices=list(ARCHITECTURES))
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--freeze-stages", type=int, nargs="+", default=[2, 3], help="frozen settings to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--real", metavar="DATA_DIR", help="time the real training loop on this dataset instead")
    parser.add_argument("--batches", type=int, default=40, help="with --real: batches per setting")
    parser.add_argument("--cache-dir", default="results/cache", help="with --real: the decoded-image cache")
    return parser


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.real:
        print(f"machine: {platform.machine()}, CPU flags: {cpu_flags()}, torch {torch.__version__}, {args.threads} "
              f"threads; {args.batches} batches of 32 per setting, the real loop (cache, augmentation, step, EMA)")
        print(real_epoch_rates(args).to_string(index=False, float_format=lambda x: f"{x:.2f}"))
        return 0
    settings = [Setting("baseline (contiguous, all layers trained)", False, 0),
                Setting("channels_last", True, 0),
                *(Setting(f"channels_last + freeze_stages {n}", True, n) for n in args.freeze_stages)]
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {args.threads} threads; {args.model} at "
          f"{args.img_size}px, batch {args.batch_size}; median of {args.steps} steps after {args.warmup} warm-up")
    rows = []
    for setting in settings:
        lat = summarize(step_times(setting, args), batch=args.batch_size, threads=args.threads)
        rows.append({"setting": setting.name, "step_ms": lat.median_ms, "iqr_ms": lat.iqr_ms,
                     "img_per_s": args.batch_size / lat.median_ms * 1e3})
    table = pd.DataFrame(rows)
    table["speedup"] = table["img_per_s"] / table["img_per_s"].iloc[0]
    print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
