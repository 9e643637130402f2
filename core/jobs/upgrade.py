"""Upgrade artifacts of earlier versions, once, so that the rest of the code reads one version only.

- Cards: ``model.json`` (trained models, ``lesionlite-model/1``) and ``model_card.json`` (variants,
  ``lesionlite-variant/1``) are rewritten as ``card.json`` (:data:`~core.artifacts.card.CARD_FORMAT`); a variant that
  was never calibrated gets its temperature, "uncertain" threshold and screening operating points fitted on its
  parent's validation split now (what the sweep does for every new cell).
- Stores: artifact paths that name an earlier card file point to ``card.json``; variant runs stored before the
  sweep named their family (pruned after training, lower resolution, ...) get it, from their variant name.

Trained folders are upgraded before variants (a variant's calibration reads its parent). Running it again finds
nothing to do.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from core.artifacts.card import CARD_NAME, EARLIER_CARDS, Card, parent_model_dir, save_card, write_variant
from core.metrics import evaluate_logits
from core.provenance import git_sha, utc_now
from core.serve.predict import load_predictor, predict_logits
from core.store.results import ResultsStore
from core.train.parent import Parent, load_parent

log = logging.getLogger(__name__)

TRAINED_CARD, VARIANT_CARD = "model.json", "model_card.json"


@dataclass(frozen=True)
class Upgraded:
    folder: Path
    kind: str  # "trained" or "variant"
    calibrated: bool  # whether calibration was fitted now (the earlier card had none)


def earlier_folders(root: str | Path) -> list[Path]:
    """Folders at or below ``root`` with a card of an earlier version: trained models first, then variants."""
    root = Path(root)
    found = {p.parent for name in EARLIER_CARDS for p in [*root.glob(name), *root.rglob(name)]}
    return sorted(found, key=lambda f: ((f / VARIANT_CARD).is_file(), str(f)))


def _read_earlier(folder: Path) -> tuple[Card, Path]:
    name = VARIANT_CARD if (folder / VARIANT_CARD).is_file() else TRAINED_CARD
    path = folder / name
    data = json.loads(path.read_text())
    if data.get("format", EARLIER_CARDS[name]) != EARLIER_CARDS[name]:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {EARLIER_CARDS[name]!r}")
    return Card._from_fields(data, source=str(path)), path


def _calibrate(card: Card, folder: Path, parent: Parent, *, target_accuracy: float, threads: int) -> None:
    logits, labels = predict_logits(load_predictor(str(folder), threads=threads),
                                    parent.split.loader("val", batch_size=64))
    before = evaluate_logits(labels, logits).metrics["ece"]
    card.calibrate(logits, labels, target_accuracy=target_accuracy, fitted_at=utc_now().isoformat(timespec="seconds"),
                   git_sha=git_sha(), val_ece_before=before, by="upgrade")
    card.extra["calibration"]["val_ece_after"] = evaluate_logits(labels, logits,
                                                                 temperature=card.temperature).metrics["ece"]


def upgrade_folders(root: str | Path, *, models_dir: str | Path, target_accuracy: float,
                    threads: int = 2) -> list[Upgraded]:
    """Rewrite every earlier card at or below ``root`` as ``card.json`` (calibrating variants that never were)."""
    parents: dict[str, Parent] = {}
    done = []
    for folder in earlier_folders(root):
        card, old = _read_earlier(folder)
        calibrated = False
        if card.file:
            # a predictor reads card.json: write it first, calibrate through it, then write it again
            write_variant(folder, model_file=card.file, card=card)
            if card.uncertain_threshold is None:
                if card.parent_run_id not in parents:
                    parents[str(card.parent_run_id)] = load_parent(str(parent_model_dir(card, models_dir=models_dir)))
                _calibrate(card, folder, parents[str(card.parent_run_id)], target_accuracy=target_accuracy,
                           threads=threads)
                write_variant(folder, model_file=card.file, card=card)
                calibrated = True
        else:
            save_card(folder, card)
        old.unlink()
        log.info("%s: %s -> %s%s", folder, old.name, CARD_NAME, " (calibrated on validation now)" if calibrated else "")
        done.append(Upgraded(folder, "variant" if card.file else "trained", calibrated))
    return done


def family_from_name(variant: str) -> str:
    """The family of a variant stored before the sweep recorded it, from its name."""
    for prefix, family in (("macs-", "pruned after training"), ("pruned-", "pruned (per-layer ratio)"),
                           ("unstructured-", "unstructured sparsity"), ("ptt-", "pruned then trained"),
                           ("res-", "lower resolution")):
        if variant.startswith(prefix):
            return family
    return "dense"


def upgrade_store(db: str | Path) -> dict[str, int]:
    """Point artifact paths at ``card.json`` and name the family of variant runs stored without one; returns how many
    rows of each kind changed. A format migration, not new results: no figure changes."""
    with ResultsStore(db) as store:
        con = store.con
        paths = con.execute("SELECT count(*) FROM artifacts WHERE path LIKE '%/model_card.json' "
                            "OR path LIKE '%/model.json'").fetchone()[0]
        con.execute("UPDATE artifacts SET path = regexp_replace(path, '/(model_card|model)\\.json$', '/card.json') "
                    "WHERE path LIKE '%/model_card.json' OR path LIKE '%/model.json'")
        missing = con.execute("SELECT run_id, variant FROM runs WHERE kind = 'variant' AND "
                              "json_extract_string(config, '$.family') IS NULL").fetchall()
        for run_id, variant in missing:
            con.execute("UPDATE runs SET config = json_merge_patch(config, json_object('family', ?)) WHERE run_id = ?",
                        [family_from_name(str(variant)), run_id])
    log.info("%s: %d artifact path(s) to %s, %d variant run(s) given their family", db, paths, CARD_NAME,
             len(missing))
    return {"artifact_paths": int(paths), "families": len(missing)}
