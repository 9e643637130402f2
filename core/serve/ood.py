"""Is this a dermoscopic lesion photo at all? A gate in front of the classifier.

A classifier trained on seven lesion classes gives one of them to anything, a cat included. The gate asks three
questions before a prediction is shown:

1. Is the image nearly uniform (blank, one colour)? Every channel's pixel standard deviation below
   ``min_pixel_std``.
2. Is it mostly pixel-level noise? A photograph's variation is mostly coarse (edges, shading, texture): at the
   gate's input size, what a 3x3 box blur removes is at most a quarter of the grey-level spread of HAM10000
   images (subset and samples, measured), while noise on a flat colour keeps 70-95% of it. A fixed bound of
   :data:`MAX_FINE_DETAIL` refuses noise without touching lesion photos.
3. Does it sit far from the training lesions in an ImageNet feature space? The embedding is the pooled feature
   vector of the *ImageNet-pretrained* backbone (not the fine-tuned one: fine-tuning on lesions collapses what
   separates a cat from a nevus), scored by the Mahalanobis distance to the nearest class mean (Lee et al.,
   2018; shared Ledoit-Wolf covariance). The threshold is a quantile of the validation lesions' distances, so
   the false-rejection rate on lesion photos is chosen, not hoped for.

The classifier's own logits (energy score) and its fine-tuned embedding were tried first and separated far
fewer non-skin pictures from lesions, so the gate uses neither.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageStat

from core.artifacts.onnx_runtime import ort_logits, ort_session
from core.data.transforms import Preprocessing, image_array
from core.errors import ModelError

log = logging.getLogger(__name__)

GATE_FILE = "ood_gate.npz"
GATE_BACKBONE_FILE = "ood_gate_backbone.onnx"
NOT_A_LESION = ("This does not look like a dermatoscopic skin-lesion photo, so no result is shown. Retake it closer, "
                "in focus and in even light, with the lesion in the middle of the picture. If you are worried about "
                "the lesion, see a clinician anyway.")
MAX_FINE_DETAIL = 0.5  # share of the grey-level spread a 3x3 blur removes; photos <= 0.25, noise >= 0.7


def fine_detail_share(image: Image.Image, *, size: int = 224) -> float:
    """std(grey - blur3x3(grey)) / std(grey) at ``size`` pixels: near 0.1-0.25 for photographs, 0.7+ for noise."""
    grey = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    a = np.asarray(grey, dtype=np.float32)
    b = np.asarray(grey.filter(ImageFilter.BoxBlur(1)), dtype=np.float32)
    return float((a - b).std() / max(float(a.std()), 1e-6))


@dataclass
class GateDecision:
    accepted: bool
    reason: str  # "", "uniform", "noise" or "unfamiliar" (for logs: never shown to the sender)
    distance: float

    @property
    def message(self) -> str:
        return "" if self.accepted else NOT_A_LESION


class OnnxEmbedder:
    """The gate's backbone file (pooled ImageNet features, fp32 or int8) in one ONNX Runtime session."""

    def __init__(self, path: Path, prep: Preprocessing, *, threads: int = 1):
        self.path, self.prep, self.session = Path(path), prep, ort_session(path, threads=threads)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return ort_logits(self.session, images)


def symmetric_from_upper(upper: np.ndarray) -> np.ndarray:
    """The symmetric (d, d) matrix whose upper triangle, row by row, is ``upper`` (d (d + 1) / 2 values)."""
    d = int((np.sqrt(8 * len(upper) + 1) - 1) / 2)
    if d * (d + 1) // 2 != len(upper):
        raise ValueError(f"{len(upper)} values are not the upper triangle of a square matrix")
    matrix = np.zeros((d, d), dtype=np.float64)
    matrix[np.triu_indices(d)] = upper
    return matrix + np.triu(matrix, 1).T


@dataclass
class OodGate:
    """Class means and shared precision of the training lesions' embeddings, and the two thresholds."""

    architecture: str
    prep: Preprocessing
    means: np.ndarray  # (classes, d)
    precision: np.ndarray  # (d, d)
    threshold: float
    min_pixel_std: float
    quantile: float
    embedder: OnnxEmbedder

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each embedding to its nearest class mean:
        (x - m)' P (x - m) = x'Px - 2 x'Pm + m'Pm, with Pm and m'Pm computed once."""
        x = np.asarray(embeddings, dtype=np.float64)
        pm = self.means @ self.precision  # (classes, d); P is symmetric
        mpm = np.einsum("cd,cd->c", pm, self.means)
        xpx = np.einsum("nd,de,ne->n", x, self.precision, x, optimize=True)
        return np.min(xpx[:, None] - 2 * x @ pm.T + mpm[None, :], axis=1)

    def check(self, image: Image.Image, *, array: np.ndarray | None = None) -> GateDecision:
        """``array``: ``image`` already preprocessed with :attr:`prep` (3, H, W), when the caller has it."""
        spread = ImageStat.Stat(image.convert("RGB")).stddev  # per channel, in C: a flat colour is not flat grey
        if max(spread) < self.min_pixel_std:
            return GateDecision(False, "uniform", float("inf"))
        if fine_detail_share(image) > MAX_FINE_DETAIL:
            return GateDecision(False, "noise", float("inf"))
        x = image_array(image, self.prep) if array is None else array
        distance = float(self.distances(self.embedder(x[None]))[0])
        return GateDecision(distance <= self.threshold, "" if distance <= self.threshold else "unfamiliar", distance)

    def save(self, folder: Path) -> Path:
        """Write the statistics and the backbone's ONNX file into ``folder``; returns the statistics file."""
        if self.embedder.path != Path(folder) / GATE_BACKBONE_FILE:
            shutil.copyfile(self.embedder.path, Path(folder) / GATE_BACKBONE_FILE)
        return self.save_statistics(folder)

    def save_statistics(self, folder: Path) -> Path:
        """Write the statistics alone (``GATE_FILE``): a release ships them without the backbone."""
        path = Path(folder) / GATE_FILE
        meta = {"architecture": self.architecture, "prep": self.prep.to_dict(), "threshold": self.threshold,
                "min_pixel_std": self.min_pixel_std, "quantile": self.quantile, "backbone": GATE_BACKBONE_FILE}
        # The precision is symmetric: its upper triangle is all of it, and half the bytes (a release ships it).
        upper = self.precision[np.triu_indices(len(self.precision))].astype(np.float32)
        np.savez(path, means=self.means.astype(np.float32), precision_upper=upper, meta=np.array(json.dumps(meta)))
        return path

    @staticmethod
    def load_meta(folder: Path) -> dict:
        """The stored settings of the gate in ``folder`` (architecture, preprocessing, thresholds), without
        opening its backbone."""
        path = Path(folder) / GATE_FILE
        try:
            with np.load(path, allow_pickle=False) as f:
                return json.loads(str(f["meta"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: not a readable out-of-distribution gate ({type(exc).__name__})") from None

    @classmethod
    def load(cls, folder: Path) -> OodGate | None:
        """The gate stored in a model or variant folder, or None where there is none."""
        path = Path(folder) / GATE_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                prep = Preprocessing.from_dict(meta["prep"])
                embedder = OnnxEmbedder(Path(folder) / meta["backbone"], prep)
                return cls(meta["architecture"], prep, f["means"].astype(np.float64),
                           symmetric_from_upper(f["precision_upper"]), float(meta["threshold"]),
                           float(meta["min_pixel_std"]), float(meta["quantile"]), embedder)
        except (OSError, KeyError, ValueError, RuntimeError) as exc:  # ORT raises its own (RuntimeError) kinds
            raise ModelError(f"{path}: not a readable out-of-distribution gate "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
