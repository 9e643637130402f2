"""The release in the repository (``results/release/``): build it from a gated variant, check it, install it.

    python -m scripts.release build --variant <variant folder> --db <store> --description "..." [--command "..."]
    python -m scripts.release check                      # files against release.json, and the 10 MB limit
    python -m scripts.release install                    # gate backbone from the package weights; store rows
    python -m scripts.release verify --db <store> --run <run id>   # a variant rebuilt from the data (the commands
                                                         # in release.json) against the release, image by image

``make webapp`` and ``make dashboard`` run ``install`` and, unless told otherwise, serve and show the release.
"""

from __future__ import annotations

import argparse
import sys

from core.cli import run_cli, script_parser
from core.jobs.release import RELEASE_DIR, build_release, check_release, install_release, verify_rebuild


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Build, check or install the release a fresh checkout serves", add_help=add_help)
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="write a release of a gated variant")
    build.add_argument("--variant", required=True, help="variant folder (with card.json and ood_gate.npz)")
    build.add_argument("--db", required=True, help="results store holding the variant's runs")
    build.add_argument("--description", required=True, help="what the model is, in a sentence (goes in release.json)")
    build.add_argument("--command", action="append", default=[], dest="commands",
                       help="a command that made it (repeatable; recorded in release.json)")
    verify = sub.add_parser("verify", help="compare a variant rebuilt from the data with the release")
    verify.add_argument("--db", required=True, help="results store of the rebuilt variant")
    verify.add_argument("--run", required=True, help="the rebuilt variant's run id")
    verify.add_argument("--min-agreement", type=float, default=0.99,
                        help="share of images whose top class must agree, on every split")
    for action in (build, verify, sub.add_parser("check", help="compare the files with release.json"),
                   sub.add_parser("install", help="rebuild the gate backbone and the store beside the release")):
        action.add_argument("--release", default=str(RELEASE_DIR), help="release folder")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.action == "build":
        info = build_release(args.variant, db=args.db, out=args.release, description=args.description,
                             commands=args.commands)
        print(f"{info.folder}: {info.total_bytes / 1e6:.2f} MB, {len(info.manifest['files'])} files, "
              f"{len(info.manifest['runs'])} runs")
        return 0
    if args.action == "check":
        problems = check_release(args.release)
        for problem in problems:
            print(f"{args.release}: {problem}", file=sys.stderr)
        print(f"{args.release}: {'matches its manifest' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    if args.action == "verify":
        result = verify_rebuild(args.release, db=args.db, run_id=args.run, min_agreement=args.min_agreement)
        for split, share in result.agreement.items():
            print(f"{split}: top class agrees on {share:.4f} of the images")
        print(f"{result.images} images; largest probability difference {result.max_prob_difference:.4f}; "
              f"{'matches' if result.matches else 'does NOT match'} (at least {result.min_agreement} on each split)")
        return 0 if result.matches else 1
    info = install_release(args.release)
    print(f"{info.folder}: installed ({info.manifest['variant']} of {info.manifest['parent_run_id']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
