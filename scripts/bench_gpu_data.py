"""GPU data path benchmark: training images/s against the model's raw throughput at the same batch.

    python -m scripts.bench_gpu_data --data-dir ../shared/data/ham10000 [--model efficientnet_lite0] [--img-size 160]

Three figures, measured in one run on one device: (1) raw = forward + backward + optimizer step on random tensors
already on the device (the ceiling); (2) device = the training loop fed by the GPU data path (uint8 images on the
device, augmentation there); (3) loader = the same loop fed by the CPU DataLoader. Target: device >= 80% of raw.
Meant for a GPU (bf16 autocast, channels_last); on CPU it runs too (that is how it is tested) but says nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable

import torch
from torch import nn

from core.cli import run_cli, script_parser
from core.data.device_images import DeviceImages
from core.data.prepare import PreparedSplit, prepare_data
from core.data.split import make_split
from core.data.transforms import preprocessing_for
from core.models import create_model
from core.runtime import resolve_device, seed_everything
from core.train.config import TrainConfig
from core.train.loaders import train_loader


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Training throughput: GPU data path vs DataLoader vs the model's raw speed",
                           add_help=add_help)
    parser.add_argument("--data-dir", required=True, help="HAM10000-layout folder")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per figure (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the loader figure")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-dir", default="results/cache")
    return parser


def _steps(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, device: torch.device,
           steps: int, warmup: int) -> float:
    """Images per second of forward + backward + step over ``steps`` batches after ``warmup``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, None
    for i, (images, labels) in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, seen = time.perf_counter(), 0
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels)
        if i + 1 >= warmup + steps:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)  # type: ignore[operator]


def _repeat(make: callable, total: int) -> Iterable:  # type: ignore[valid-type]
    """Batches from epoch after epoch until ``total`` have been drawn."""
    drawn, epoch = 0, 0
    while drawn < total:
        for batch in make(epoch):
            yield batch
            drawn += 1
            if drawn >= total:
                return
        epoch += 1


def main(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    seed_everything(0)
    model = create_model(args.model, pretrained=False).to(device).to(memory_format=torch.channels_last)
    prep = preprocessing_for(model, args.img_size)
    data = prepare_data(args.data_dir, prep=prep, cache_dir=args.cache_dir, workers=4)
    split = PreparedSplit(data, make_split(data.table, seed=0), prep)
    cfg = TrainConfig(batch_size=args.batch_size, workers=args.workers, imbalance="balanced_sampler",
                      data_dir=args.data_dir)
    total = args.steps + args.warmup
    size = prep.input_size
    random = [(torch.randn(args.batch_size, 3, size, size, device=device),
               torch.randint(0, 7, (args.batch_size,), device=device))] * total
    raw = _steps(model, random, device=device, steps=args.steps, warmup=args.warmup)
    on_device = DeviceImages(split.dataset("train", transform=None), device=device)
    fed = _steps(model, _repeat(lambda e: train_loader(split, cfg, e, on_device=on_device), total), device=device,
                 steps=args.steps, warmup=args.warmup)
    loader = _steps(model, _repeat(lambda e: train_loader(split, cfg, e), total), device=device,
                    steps=args.steps, warmup=args.warmup)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{args.model} at {size} px, batch {args.batch_size}, {name}, {args.steps} timed steps each")
    print(f"raw (random tensors on the device): {raw:8.0f} img/s")
    print(f"GPU data path (images on the device): {fed:8.0f} img/s  = {fed / raw:.0%} of raw (target >= 80%)")
    print(f"DataLoader ({args.workers} workers):   {loader:8.0f} img/s  = {loader / raw:.0%} of raw")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
