"""Photo-quality feedback for an upload: blur, glare and exposure, each with the advice a patient can act on.

Advice only: the check never refuses a photo (the out-of-distribution gate decides what is not a lesion photo).
Every measure is taken on the image resized to a short side of 224 px, near the scale the models see, so a
photo's resolution does not move the thresholds. The thresholds were set on HAM10000's 70 original 600x450
sample images and 1,500 of the 200x150 subset, and on blurred and glared copies of the samples
(``python -m scripts.eval_photo_quality``, results/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SCALE = 224  # short side at which every measure is taken
BLUR_MIN_SHARPNESS = 4.0  # variance of the Laplacian; the 70 originals: 9.3 and above
GLARE_MAX_SHARE = 0.03  # share of near-white pixels (every channel > 240)
DARK_MAX_MEAN = 50.0  # mean luminance (0-255); HAM10000 images: 81 and above
BRIGHT_MIN_MEAN = 235.0  # mean luminance; HAM10000 images: 224 and below


@dataclass(frozen=True)
class QualityIssue:
    code: str  # "blur", "glare", "dark", "bright"
    message: str  # what a patient reads: the problem and how to retake the photo


@dataclass(frozen=True)
class PhotoQuality:
    """The measures of one photo and the issues they raise (none: the photo looks usable)."""

    sharpness: float
    glare_share: float
    brightness: float
    issues: tuple[QualityIssue, ...]

    @property
    def ok(self) -> bool:
        return not self.issues

    def as_dict(self) -> dict[str, object]:
        return {"sharpness": round(self.sharpness, 3), "glare_share": round(self.glare_share, 5),
                "brightness": round(self.brightness, 2), "issues": [i.code for i in self.issues]}


ADVICE = {
    "blur": "The photo looks blurred. Hold the camera (or dermatoscope) still, let it focus on the spot, and "
            "take the photo again.",
    "glare": "Part of the photo is washed out by a reflection. Avoid direct flash or a lamp shining on the skin; "
             "daylight from the side works best.",
    "dark": "The photo is too dark to show the spot clearly. Take it again in better light.",
    "bright": "The photo is overexposed (too bright). Take it again without flash, or in softer light.",
}


def measure(image: Image.Image) -> tuple[float, float, float]:
    """Sharpness (variance of the 4-neighbour Laplacian of the luminance), glare share and mean luminance."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    scale = SCALE / min(w, h)
    small = np.asarray(rgb.resize((max(SCALE, round(w * scale)), max(SCALE, round(h * scale))), Image.BILINEAR),
                       dtype=np.float32)
    luma = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    laplacian = (luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1])
    return float(laplacian.var()), float((small.min(axis=2) > 240).mean()), float(luma.mean())


def photo_quality(image: Image.Image) -> PhotoQuality:
    """Measure ``image`` and list what a retake would fix."""
    sharpness, glare, brightness = measure(image)
    found = [code for code, bad in (("blur", sharpness < BLUR_MIN_SHARPNESS), ("glare", glare > GLARE_MAX_SHARE),
                                    ("dark", brightness < DARK_MAX_MEAN), ("bright", brightness > BRIGHT_MIN_MEAN))
             if bad]
    return PhotoQuality(sharpness, glare, brightness, tuple(QualityIssue(c, ADVICE[c]) for c in found))
