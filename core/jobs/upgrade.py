"""Upgrade artifacts of earlier versions, once, so that the rest of the code reads one version only.

- Cards: ``model.json`` (trained models, ``lesionlite-model/1``), ``model_card.json`` (variants,
  ``lesionlite-variant/1``) and flat ``card.json`` files (``lesionlite-card/2``) are rewritten as ``card.json`` with
  typed records (:data:`~core.artifacts.card.CARD_FORMAT`); a variant that was never calibrated gets its temperature,
  "uncertain" threshold and screening operating points fitted on its parent's validation split now (what the sweep
  does for every new cell).
- Gates: ``ood_gate.npz`` files that store the full precision matrix are rewritten with its upper triangle only.
- Stores: artifact paths that name an earlier card file point to ``card.json``; variant runs stored before the
  sweep named their family (pruned after training, lower resolution, ...) get it, from their variant name.

Trained folders are upgraded before variants (a variant's calibration reads its parent). Running it again finds
nothing to do.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.artifacts.card import (
    CARD_NAME,
    EARLIER_CARDS,
    EARLIER_FORMATS,
    Card,
    parent_model_dir,
    save_card,
    write_variant,
)
from core.artifacts.records import Calibration, Compression, Deployment, Origin
from core.classes import CLASSES
from core.compress.kinds import DENSE_FAMILY, KINDS
from core.data.transforms import Preprocessing
from core.metrics import evaluate_logits
from core.provenance import git_sha, utc_now
from core.serve.ood import GATE_FILE
from core.serve.predict import load_predictor, predict_logits
from core.store.results import ResultsStore
from core.train.parent import Parent, load_parent
from core.triage import Triage

log = logging.getLogger(__name__)

TRAINED_CARD, VARIANT_CARD = "model.json", "model_card.json"


@dataclass(frozen=True)
class Upgraded:
    folder: Path
    kind: str  # "trained" or "variant"
    calibrated: bool  # whether calibration was fitted now (the earlier card had none)


def _is_earlier(card_json: Path) -> bool:
    try:
        return json.loads(card_json.read_text()).get("format") in EARLIER_FORMATS
    except (json.JSONDecodeError, AttributeError):
        return False  # damaged: reading it says so, the upgrade cannot mend it


def earlier_folders(root: str | Path) -> list[Path]:
    """Folders at or below ``root`` with a card of an earlier version: trained models first, then variants."""
    root = Path(root)
    found = {p.parent for name in EARLIER_CARDS for p in [*root.glob(name), *root.rglob(name)]}
    found |= {p.parent for p in [*root.glob(CARD_NAME), *root.rglob(CARD_NAME)] if _is_earlier(p)}
    return sorted(found, key=lambda f: (_is_variant(f), str(f)))


def _is_variant(folder: Path) -> bool:
    return (folder / VARIANT_CARD).is_file() or bool(json.loads(_earlier_card(folder).read_text()).get("file"))


def _earlier_card(folder: Path) -> Path:
    return next(folder / n for n in (VARIANT_CARD, TRAINED_CARD, CARD_NAME) if (folder / n).is_file())


def _read_earlier(folder: Path) -> tuple[Card, Path]:
    path = _earlier_card(folder)
    data = json.loads(path.read_text())
    expected = EARLIER_CARDS.get(path.name, "lesionlite-card/2")
    if data.get("format", expected) != expected:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {expected!r}")
    return card_from_flat(data, source=str(path)), path


_TOP = ("run_id", "architecture", "classes", "preprocessing", "variant", "parent_run_id", "file", "triage",
        "drop_rate", "metrics")
_ORIGIN = ("git_sha", "seed", "split_hash", "dataset_fingerprint", "training_data", "data_licence",
           "pretrained_weights", "distillation", "cv_id", "fold", "folds_hash", "parent_dir", "promoted_from")
_COMPRESSION = ("pruning", "pruning_ratio", "quantization", "params", "macs", "sparsity", "qat")
_DEPLOYMENT = ("size_bytes", "runtime", "latency_ms", "export_check")
_CALIBRATION = ("temperature", "uncertain_threshold", "calibration")
_IMPLIED = ("format", "pretrained")  # the version tag; "pretrained" is implied by pretrained_weights


def card_from_flat(d: dict[str, Any], *, source: str) -> Card:
    """A card of version 1 or 2 (every fact at the top level) as typed records. A key this does not know is an
    error naming it: the upgrade loses nothing silently."""
    unknown = sorted(set(d) - {*_TOP, *_ORIGIN, *_COMPRESSION, *_DEPLOYMENT, *_CALIBRATION, *_IMPLIED})
    if unknown:
        raise ValueError(f"{source}: unknown card field(s) {', '.join(unknown)}; not upgraded")
    noted = dict(d.get("calibration") or {})
    calibration = Calibration(temperature=float(d.get("temperature", 1.0)),
                              uncertain_threshold=d.get("uncertain_threshold"), fitted_on=noted.pop("fitted_on", None),
                              target_accuracy=noted.pop("target_accuracy", None), notes=noted)
    origin = {k: d[k] for k in _ORIGIN if k in d}
    origin.setdefault("training_data", {"name": "not recorded before the upgrade", "synthetic": False, "images": 0,
                                        "data_dir": ""})
    for key, unknown_value in (("git_sha", "unknown"), ("seed", 0), ("split_hash", "unknown"),
                               ("dataset_fingerprint", "unknown")):
        origin.setdefault(key, unknown_value)
    compression = deployment = None
    if d.get("file"):  # a promoted parent's card kept its variant's facts: a trained card has neither record
        if "quantization" in d:
            compression = Compression.from_dict({k: d[k] for k in _COMPRESSION if k in d}, source=source)
        deployment = Deployment.from_dict(
            {"size_bytes": d.get("size_bytes", 0), "runtime": d.get("runtime"), "latency": d.get("latency_ms"),
             "export_check": d.get("export_check")}, source=source)
    return Card(run_id=str(d["run_id"]), architecture=str(d["architecture"]),
                preprocessing=Preprocessing.from_dict(d["preprocessing"]), classes=tuple(d.get("classes", CLASSES)),
                variant=str(d.get("variant", "trained")), parent_run_id=d.get("parent_run_id"), file=d.get("file"),
                drop_rate=float(d.get("drop_rate", 0.0)), origin=Origin.from_dict(origin, source=source),
                calibration=calibration, triage=Triage.from_dict(d.get("triage")), compression=compression,
                deployment=deployment, metrics=d.get("metrics") or {})


def _calibrate(card: Card, folder: Path, parent: Parent, *, target_accuracy: float, threads: int) -> None:
    logits, labels = predict_logits(load_predictor(str(folder), threads=threads),
                                    parent.split.loader("val", batch_size=64))
    before = evaluate_logits(labels, logits).metrics["ece"]
    card.calibrate(logits, labels, target_accuracy=target_accuracy, fitted_at=utc_now().isoformat(timespec="seconds"),
                   git_sha=git_sha(), val_ece_before=before, by="upgrade")
    after = evaluate_logits(labels, logits, temperature=card.temperature).metrics["ece"]
    card.calibration = dataclasses.replace(card.calibration, notes={**card.calibration.notes, "val_ece_after": after})


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
        if old.name != CARD_NAME:
            old.unlink()
        log.info("%s: %s -> %s%s", folder, old.name, CARD_NAME, " (calibrated on validation now)" if calibrated else "")
        done.append(Upgraded(folder, "variant" if card.file else "trained", calibrated))
    return done


def upgrade_gates(root: str | Path) -> list[Path]:
    """Rewrite gate files at or below ``root`` that hold the full precision matrix (before the upper triangle)."""
    done = []
    for path in sorted({*Path(root).glob(GATE_FILE), *Path(root).rglob(GATE_FILE)}):
        with np.load(path, allow_pickle=False) as f:
            if "precision" not in f.files:
                continue
            arrays = {name: f[name] for name in f.files}
        full = arrays.pop("precision")
        arrays["precision_upper"] = full[np.triu_indices(len(full))].astype(np.float32)
        tmp = path.with_name(f".{path.stem}.upgrading.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        log.info("%s: precision stored as its upper triangle", path)
        done.append(path)
    return done


_OLD_FAMILIES = {"pruned then trained": KINDS["retrained"].family}  # labels earlier versions of this command wrote


def family_from_name(variant: str) -> str:
    """The family of a variant stored before the sweep recorded it, from its name (the sweep's own labels)."""
    for kind in KINDS.values():
        if variant.startswith(f"{kind.variant_prefix}-"):
            return kind.family
    return DENSE_FAMILY


def upgrade_store(db: str | Path) -> dict[str, int]:
    """Point artifact paths at ``card.json``, make relative ones absolute, and name the family of variant runs stored
    without one; returns how many rows of each kind changed. A format migration, not new results: no figure changes."""
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
        relative = [(path, run_id, kind) for run_id, kind, path in
                    con.execute("SELECT run_id, kind, path FROM artifacts").fetchall() if not Path(path).is_absolute()]
        for path, run_id, kind in relative:
            con.execute("UPDATE artifacts SET path = ? WHERE run_id = ? AND kind = ?",
                        [str(_absolute_artifact(path, store_path=Path(db))), run_id, kind])
        renamed = 0
        for old_label, family in _OLD_FAMILIES.items():  # DuckDB's UPDATE answers how many rows it changed
            renamed += con.execute("UPDATE runs SET config = json_merge_patch(config, json_object('family', ?)) "
                                   "WHERE kind = 'variant' AND json_extract_string(config, '$.family') = ?",
                                   [family, old_label]).fetchone()[0]
    log.info("%s: %d artifact path(s) to %s, %d made absolute, %d variant run(s) given their family, %d renamed to "
             "the sweep's label", db, paths, CARD_NAME, len(relative), len(missing), renamed)
    return {"artifact_paths": int(paths), "absolute_paths": len(relative), "families": len(missing),
            "families_renamed": int(renamed)}


def _absolute_artifact(path: str, *, store_path: Path) -> Path:
    """Where a relative artifact path of an earlier store points: relative to the folder the run was started in
    (this one, the repository root above the store's folder, or the store's folder)."""
    store_dir = store_path.resolve().parent
    for base in (Path.cwd(), store_dir.parent, store_dir):
        if (base / path).exists():
            return (base / path).resolve()
    return (Path.cwd() / path).resolve()
