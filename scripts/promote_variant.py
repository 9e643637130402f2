"""Make a dense PyTorch variant a parent for further compression (e.g. prune the 128-px model).

    python -m scripts.promote_variant results/variants/<parent run id>/res-128-torch_fp32 results/models/<new>
    python -m scripts.sweep -c configs/sweep-ham10000-chain.yaml --parents efficientnet_lite0=results/models/<new>
"""

from __future__ import annotations

import argparse
import logging
import sys

from core.cli import run_cli, script_parser
from core.train.parent import promote_variant

log = logging.getLogger("scripts.promote_variant")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Turn a dense PyTorch variant into a trained-model folder a sweep can use as its parent",
                           add_help=add_help)
    parser.add_argument("variant", help="a variant folder with model.pt (a dense cell, e.g. res-128-torch_fp32)")
    parser.add_argument("out", help="the new trained-model folder (must not exist or be empty)")
    return parser


def main(args: argparse.Namespace) -> int:
    out = promote_variant(args.variant, args.out)
    log.info("parent written to %s (use it with scripts.sweep --parents <arch>=%s)", out, out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
