"""Shared plumbing for the thin command-line scripts: logging set-up and one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.errors import LesionLiteError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("lesionlite")


# Libraries that log every step of an export at INFO (42 of a demo run's 103 lines were onnxscript's).
CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "torch.export", "torch.fx")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in CHATTY_LOGGERS:  # their warnings still show; -v shows everything
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def run_cli(main: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser,
            argv: list[str] | None = None) -> int:
    """Parse, run ``main``, and turn user errors into ``error: <message>`` with exit status 2."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    from core.provenance import git_sha

    git_sha()  # read now: the commit of the code this process loaded, not of a tree edited while it ran
    try:
        return int(main(args) or 0)
    except LesionLiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def script_parser(description: str, *, add_help: bool = True) -> argparse.ArgumentParser:
    """The parser every script starts from: its description and ``-v/--verbose``."""
    parser = argparse.ArgumentParser(description=description, add_help=add_help)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def config_parser(description: str, config_cls: type, *, add_help: bool = True) -> argparse.ArgumentParser:
    """A script parser with ``-c/--config`` (YAML defaults) and one flag per field of ``config_cls``."""
    from core.config import add_config_args

    parser = script_parser(description, add_help=add_help)
    parser.add_argument("-c", "--config", help="YAML config (defaults for every flag below)")
    add_config_args(parser, config_cls)
    return parser


def print_table(table: pd.DataFrame, columns: list[str], *, title: str) -> None:
    """A results table on standard output, wide enough to read (a script's answer, not a log line)."""
    import pandas as pd

    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(title)
        print(table[columns].to_string(index=False))


def write_table(table: pd.DataFrame, out: str | None, **provenance: object) -> None:
    """``table`` as CSV at ``out`` (nothing when None), with ``provenance`` columns and the git SHA of this code."""
    if not out:
        return
    from core.provenance import git_sha

    table.assign(**provenance, git_sha=git_sha()).to_csv(out, index=False)
    print(f"written: {out}")
