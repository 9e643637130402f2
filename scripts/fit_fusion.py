"""Fit metadata late fusion on a finished cross-validation's out-of-fold predictions, for deployment.

    python -m scripts.fit_fusion --db results/results.duckdb --cv <cv id> --folds 5 \\
        --data ../shared/data/ham10000 [--out results/cv/<cv id>/fusion.json] [--attach <variant folder> ...] \
        [--score <run id>:test]    # the fitted fusion on a stored run's predictions, paired (test: read once)

Fits :class:`core.fusion.LogisticStack` (the image model's probabilities with age, sex and body site; ``dx_type`` is
refused) on every out-of-fold image, prints its cross-fitted figures paired against the image model, fits its
temperature, "uncertain" threshold and screening operating points on its cross-fitted probabilities, and writes one
JSON file (:class:`core.fusion.MetadataFusion` with provenance); ``--attach`` writes it into variants' cards, which
then fuse whatever metadata a patient gives (and answer with the image model alone when none is given).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.artifacts.card import read_variant_card
from core.cli import run_cli, script_parser
from core.fusion import METADATA_FIELDS
from core.jobs.fusion_fit import attach_fusion, fit_fusion, score_fusion
from core.jobs.screen import SCREEN_METRICS
from core.store.results import DEFAULT_DB, ResultsStore


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Fit metadata late fusion on a cross-validation's out-of-fold predictions",
                           add_help=add_help)
    parser.add_argument("--db", default=str(DEFAULT_DB), help="DuckDB results store (read-only)")
    parser.add_argument("--cv", required=True, help="the cross-validation's id (its fold runs are pooled)")
    parser.add_argument("--folds", type=int, required=True, help="how many folds it has (every one must be done)")
    parser.add_argument("--data", required=True, help="the dataset folder (metadata: lesion ids, age, sex, site)")
    parser.add_argument("--fields", nargs="+", default=list(METADATA_FIELDS), help="metadata fields to fuse")
    parser.add_argument("--out", default="", help="JSON file to write (default: results/cv/<cv>/fusion.json)")
    parser.add_argument("--attach", nargs="+", default=[], metavar="VARIANT",
                        help="variant folders whose cards get the fusion (a model of this cross-validation's recipe)")
    parser.add_argument("--score", nargs="+", default=[], metavar="RUN:SPLIT",
                        help="stored runs' predictions to score with the fitted fusion, paired against them")
    return parser


def main(args: argparse.Namespace) -> int:
    out = Path(args.out or f"results/cv/{args.cv}/fusion.json")
    with ResultsStore(args.db, read_only=True) as store:
        fitted = fit_fusion(store, cv_id=args.cv, folds=args.folds, data_dir=args.data, out=out,
                            fields=tuple(args.fields))
    print("cross-fitted over lesions (no image scores itself); point [95% interval over lesions]:")
    _print_figures(fitted.figures)
    fusion = fitted.fusion
    print(f"fused: temperature {fusion.temperature:.3f}, 'uncertain' below {fusion.uncertain_threshold:.3f}; "
          f"refer possibly malignant at >= {fusion.triage.malignant.threshold:.3f} (sensitivity "
          f"{fusion.triage.malignant.val_sensitivity:.3f}), melanoma at >= {fusion.triage.melanoma.threshold:.3f}")
    print(f"written: {fitted.path}")
    for folder in args.attach:
        attach_fusion(folder, fusion)
        print(f"attached to {folder}")
    for run in args.score:
        with ResultsStore(args.db, read_only=True) as store:
            figures = score_fusion(store, fusion, run=run, data_dir=args.data,
                                   image_card=read_variant_card(args.attach[0]) if args.attach else None)
        print(f"{run}: {figures['images']} images of {figures['lesions']} lesions; the fitted fusion against the "
              "run's own predictions:")
        _print_figures(figures)
        for key in ("image", "fused"):
            print(f"  per-class recall, {key}: " + ", ".join(
                f"{c} {r:.3f}" for c, r in figures["per_class_recall"][key].items() if r is not None))
        for key, met in figures["what_patients_meet"].items():  # at each one's own thresholds (--attach's card)
            print(f"  what a patient meets, {key}: " + ", ".join(f"{m} {v:.3f}" for m, v in met.items()))
    return 0


def _print_figures(figures: dict) -> None:
    for metric in SCREEN_METRICS:
        (f, fl, fh), (i, il, ih), (d, dl, dh) = (figures[k][metric] for k in ("fused", "image", "delta"))
        print(f"  {metric:22s} fused {f:.3f} [{fl:.3f}, {fh:.3f}]  image model {i:.3f} [{il:.3f}, {ih:.3f}]  "
              f"difference {d * 100:+.1f} [{dl * 100:+.1f}, {dh * 100:+.1f}]")


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
