"""How often the photo-quality check flags real dermatoscopic photos, and how often it catches degraded copies.

    python -m scripts.eval_photo_quality --samples-dir ../shared/data/ham10000-samples \
        --data ../shared/data/ham10000 --subset 1500

Real photos: the 600x450 originals of ``--samples-dir`` and a random ``--subset`` of the 200x150 images of
``--data`` (every one of them should pass). Degraded copies of the originals: Gaussian blur (radius 0.5%, 1% and 2%
of the width), a white flash reflection (12% of the area), 20% exposure and an overexposed copy; each should be flagged
with its issue.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core.cli import run_cli, script_parser
from core.serve.quality import photo_quality


def _reflection(image: Image.Image) -> Image.Image:
    out = image.copy()
    w, h = out.size
    ImageDraw.Draw(out).ellipse((w * 0.55, h * 0.1, w * 0.85, h * 0.45), fill=(255, 255, 255))
    return out


DEGRADATIONS: dict[str, tuple[str, Callable[[Image.Image], Image.Image]]] = {
    "blur 0.5%": ("blur", lambda im: im.filter(ImageFilter.GaussianBlur(im.width / 200))),
    "blur 1%": ("blur", lambda im: im.filter(ImageFilter.GaussianBlur(im.width / 100))),
    "blur 2%": ("blur", lambda im: im.filter(ImageFilter.GaussianBlur(im.width / 50))),
    "reflection": ("glare", _reflection),
    "dark (x0.2)": ("dark", lambda im: Image.fromarray((np.asarray(im, dtype=np.float32) * 0.2).astype(np.uint8))),
    "overexposed": ("bright", lambda im: Image.fromarray(
        np.clip(np.asarray(im, dtype=np.float32) * 0.2 + 215, 0, 255).astype(np.uint8))),
}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Evaluate the photo-quality check on real and degraded photos", add_help=add_help)
    parser.add_argument("--samples-dir", type=Path, required=True, help="folder of original dermatoscopic JPEGs")
    parser.add_argument("--data", type=Path, default=None, help="a HAM10000-layout folder (its images, any size)")
    parser.add_argument("--subset", type=int, default=1500, help="images drawn from --data (seed 0)")
    return parser


def _flagged(images: list[Image.Image]) -> tuple[int, dict[str, int]]:
    counts: dict[str, int] = {}
    flagged = 0
    for image in images:
        issues = [i.code for i in photo_quality(image).issues]
        flagged += bool(issues)
        for code in issues:
            counts[code] = counts.get(code, 0) + 1
    return flagged, counts


def main(args: argparse.Namespace) -> int:
    originals = [Image.open(p).convert("RGB") for p in sorted(args.samples_dir.rglob("*.jpg"))]
    if not originals:
        raise SystemExit(f"no JPEG images under {args.samples_dir}")
    print(f"{'set':<34} {'images':>6} {'flagged':>8}  issues")
    rows = [(f"originals ({args.samples_dir.name})", originals)]
    if args.data is not None:
        paths = sorted(args.data.rglob("*.jpg"))
        pick = np.random.default_rng(0).choice(len(paths), min(args.subset, len(paths)), replace=False)
        rows.append((f"subset of {args.data.name}", [Image.open(paths[i]).convert("RGB") for i in pick]))
    for name, images in rows:
        flagged, counts = _flagged(images)
        print(f"{name:<34} {len(images):6d} {flagged / len(images):8.1%}  {counts or ''}  (should pass)")
    for name, (expected, degrade) in DEGRADATIONS.items():
        flagged, counts = _flagged([degrade(im) for im in originals])
        caught = counts.get(expected, 0) / len(originals)
        print(f"{'originals, ' + name:<34} {len(originals):6d} {flagged / len(originals):8.1%}  {counts}  "
              f"({expected} caught: {caught:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
