"""Fit the "is this a lesion photo at all?" gate of a model, measure it, and write it beside the model.

    python -m scripts.fit_ood_gate --model <variant folder | model folder | run id> [--samples-dir <JPEGs>]

Prints the false-rejection rates on lesion photos and the rejection rates on other pictures; stores them as an
``ood_gate`` run. The site, the API and the dashboard apply the gate wherever the model's folder holds one.
"""

from __future__ import annotations

import argparse
import sys

from core.cli import config_parser, run_cli
from core.config import config_from_args
from core.jobs.gate_fit import GateConfig, run_gate_fit


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    return config_parser("Fit and measure a model's out-of-distribution gate", GateConfig, add_help=add_help)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(GateConfig, args)
    for name, value in run_gate_fit(cfg).items():
        print(f"{name:28s} {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
