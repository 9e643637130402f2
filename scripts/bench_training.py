"""Training-step throughput on this CPU: the speed-ups of the CPU recipe against plain training, same run.

    python -m scripts.bench_training [--model efficientnet_lite0] [--img-size 128] [--batch-size 32]

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


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Training-step throughput benchmark", add_help=add_help)
    parser.add_argument("--model", default="efficientnet_lite0", choices=list(ARCHITECTURES))
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--freeze-stages", type=int, nargs="+", default=[2, 3], help="frozen settings to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    return parser


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
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
