"""Calibrate variant folders made before calibration existed: temperature and "uncertain" threshold fitted on
their parent's validation split, written into each card (the store's rows stay as recorded: results are
append-only; the card is what every predictor reads)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from core.artifacts.card import is_variant_folder, parent_model_dir, read_variant_card, write_variant
from core.metrics import evaluate_logits
from core.provenance import git_sha, utc_now
from core.serve.predict import load_predictor, predict_logits
from core.train.parent import Parent, load_parent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recalibrated:
    folder: Path
    temperature: float
    threshold: float
    val_ece_before: float
    val_ece_after: float


def variant_folders(root: str | Path) -> list[Path]:
    """``root`` if it is a variant folder, else the variant folders directly below it (sorted)."""
    root = Path(root)
    if is_variant_folder(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and is_variant_folder(p))


def recalibrate(folders: list[Path], *, models_dir: str, target_accuracy: float, force: bool = False,
                threads: int = 2) -> list[Recalibrated]:
    """Fit and write the calibration of every folder whose card has none (all of them with ``force``)."""
    parents: dict[str, Parent] = {}
    done = []
    for folder in folders:
        card = read_variant_card(folder)
        if card.uncertain_threshold is not None and not force:
            log.info("%s: already calibrated (T %.3f), skipped", folder, card.temperature)
            continue
        if card.parent_run_id not in parents:
            parents[card.parent_run_id] = load_parent(str(parent_model_dir(card, models_dir=models_dir)))
        parent = parents[card.parent_run_id]
        logits, labels = predict_logits(load_predictor(str(folder), threads=threads),
                                        parent.split.loader("val", batch_size=64))
        before = evaluate_logits(labels, logits).metrics["ece"]
        card.calibrate(logits, labels, target_accuracy=target_accuracy,
                       refitted_at=utc_now().isoformat(timespec="seconds"), git_sha=git_sha(), val_ece_before=before)
        temperature, threshold = card.temperature, card.uncertain_threshold
        after = evaluate_logits(labels, logits, temperature=temperature).metrics["ece"]
        card.extra["calibration"]["val_ece_after"] = after
        write_variant(folder, model_file=str(card.file), card=card)
        log.info("%s: T %.3f, uncertain below %.3f, val ECE %.3f -> %.3f", folder.name, temperature, threshold,
                 before, after)
        done.append(Recalibrated(folder, temperature, threshold, before, after))
    return done
