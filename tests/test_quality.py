"""Photo-quality feedback: real dermatoscopic photos pass; blurred, glared, dark and overexposed copies are flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from core.serve.quality import ADVICE, photo_quality


def _samples(samples_dir: Path) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(samples_dir.glob("*.jpg"))[:20]]


def _glare(image: Image.Image) -> Image.Image:
    out = image.copy()
    w, h = out.size
    ImageDraw.Draw(out).ellipse((w * 0.55, h * 0.1, w * 0.85, h * 0.45), fill=(255, 255, 255))  # a flash reflection
    return out


def test_real_photos_pass_and_degraded_copies_are_flagged(samples_dir: Path) -> None:
    for image in _samples(samples_dir):
        assert photo_quality(image).ok, photo_quality(image)
        blurred = photo_quality(image.filter(ImageFilter.GaussianBlur(image.width / 100)))
        assert [i.code for i in blurred.issues] == ["blur"]
        assert "glare" in [i.code for i in photo_quality(_glare(image)).issues]
        dark = Image.fromarray((np.asarray(image, dtype=np.float32) * 0.2).astype(np.uint8))
        assert "dark" in [i.code for i in photo_quality(dark).issues]
        bright = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) * 0.2 + 215, 0, 255).astype(np.uint8))
        assert "bright" in [i.code for i in photo_quality(bright).issues]


def test_each_issue_tells_how_to_retake() -> None:
    flat = Image.new("RGB", (400, 300), (128, 100, 90))  # no detail at all: blurred by definition
    quality = photo_quality(flat)
    assert [i.code for i in quality.issues] == ["blur"]
    assert quality.issues[0].message == ADVICE["blur"] and "again" in ADVICE["blur"]
    assert quality.as_dict()["issues"] == ["blur"]


@pytest.mark.parametrize("size", [(200, 150), (600, 450), (4000, 3000)])
def test_measures_do_not_depend_on_resolution(samples_dir: Path, size: tuple[int, int]) -> None:
    """Every measure is taken at the models' scale: the same photo at another resolution gets the same advice."""
    image = _samples(samples_dir)[0]
    assert photo_quality(image.resize(size, Image.BICUBIC)).ok
    assert not photo_quality(image.filter(ImageFilter.GaussianBlur(6)).resize(size, Image.BICUBIC)).ok
