"""Pack one model's phone files (.ort, .pte, .tflite) and an app-facing JSON of its card into one folder.

    python -m scripts.pack_mobile results/variants/<parent run id> --model dense --out mobile/dense
    python -m scripts.pack_mobile results/variants/<parent run id>/dense-pte_int8 --out mobile/pte-int8 \
        [--fusion results/cv/<cv id>/fusion.json]   # how the app fuses age, sex and body site (scripts.fit_fusion)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core.artifacts.card import is_variant_folder
from core.artifacts.mobile_pack import mobile_folders, pack_mobile
from core.cli import run_cli, script_parser
from core.jobs.fusion_fit import read_fusion

log = logging.getLogger("scripts.pack_mobile")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Pack a model's phone files and an app-facing card for a mobile app", add_help=add_help)
    parser.add_argument("source", help="a sweep's variants folder (results/variants/<parent run id>), or one "
                                       "phone-format variant folder")
    parser.add_argument("--model", default="dense",
                        help="with a variants folder: the cells' stem (dense, macs-0.5, res-128, ...)")
    parser.add_argument("--out", required=True, help="the folder to write (files + lesionlite-app.json)")
    parser.add_argument("--fusion", help="a fusion file of this model's recipe (scripts.fit_fusion) for the app card")
    return parser


def main(args: argparse.Namespace) -> int:
    source = Path(args.source)
    folders = [source] if is_variant_folder(source) else mobile_folders(source, args.model)
    card = pack_mobile(folders, args.out, fusion=read_fusion(args.fusion) if args.fusion else None)
    files = json.loads(card.read_text())["files"]
    print(f"{'file':34s} {'runtime':20s} {'MB':>6s} {'agrees':>7s} {'test bal. acc.':>15s}")
    for f in files:
        agreement = (f.get("export_check") or {}).get("top1_agreement")
        size = f["size_bytes"] / 1e6 if f["size_bytes"] else float("nan")
        print(f"{f['file']:34s} {str(f['runtime']):20s} {size:6.2f} "
              f"{agreement if agreement is not None else float('nan'):7.3f} "
              f"{f['test_balanced_accuracy'] if f['test_balanced_accuracy'] is not None else float('nan'):15.3f}")
    print(f"{len(files)} file(s) and {card.name} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
