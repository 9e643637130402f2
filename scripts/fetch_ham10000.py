"""Download HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0) from Harvard Dataverse into the HAM10000 layout.

    python -m scripts.fetch_ham10000 --dest data/ham10000

Resumable (run it again after an interruption), verified against the listed sizes and checksums.
"""

from __future__ import annotations

import argparse
import sys

from core.cli import run_cli, script_parser
from core.data.fetch import DATAVERSE_URL, HAM10000_DOI, TRAINING_FILES, fetch_ham10000
from core.data.layout import load_table


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Fetch HAM10000 from Harvard Dataverse", add_help=add_help)
    parser.add_argument("--dest", default="data/ham10000", help="target folder")
    parser.add_argument("--base-url", default=DATAVERSE_URL, help="Dataverse server")
    parser.add_argument("--doi", default=HAM10000_DOI, help="dataset DOI")
    parser.add_argument("--files", nargs="+", default=list(TRAINING_FILES), help="file names to fetch")
    return parser


def main(args: argparse.Namespace) -> int:
    dest = fetch_ham10000(args.dest, base_url=args.base_url, doi=args.doi, names=tuple(args.files))
    table = load_table(dest)
    print(f"{dest}: {len(table)} images of {table['lesion_id'].nunique()} lesions, ready "
          "(licence CC BY-NC 4.0; cite Tschandl et al. 2018, doi:10.1038/sdata.2018.161)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
