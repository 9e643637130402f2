"""A synthetic dataset in the HAM10000 layout: the embedded default for users without the real data.

Procedurally drawn lesion-like images whose colour, shape, border and texture depend on the class, several
images per lesion (rotated, shifted, re-lit), imbalanced like HAM10000. Classes overlap on purpose (each
lesion's look is blended towards a random other class and textures are sometimes absent), so a small CNN
learns it well above chance but not perfectly. It is for exercising the pipeline, not for medical claims.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core.classes import CLASSES
from core.data.layout import HAM_METADATA
from core.errors import DatasetError
from core.progress import progress

log = logging.getLogger(__name__)

# Image shares of the real HAM10000 (10,015 images), in CLASSES order.
HAM_CLASS_SHARES = {"mel": 0.111, "nv": 0.669, "bcc": 0.051, "akiec": 0.033, "bkl": 0.110, "df": 0.011, "vasc": 0.014}

# Per class: lesion RGB, radius (fraction of the short side), border irregularity, asymmetry, texture.
_STYLE = {
    "nv": ((120, 80, 55), 0.30, 0.04, 0.05, "network"),
    "mel": ((70, 45, 40), 0.36, 0.16, 0.30, "veil"),
    "bkl": ((150, 115, 80), 0.32, 0.08, 0.12, "ridges"),
    "bcc": ((200, 140, 140), 0.26, 0.06, 0.10, "vessels"),
    "akiec": ((190, 110, 95), 0.28, 0.10, 0.15, "scales"),
    "df": ((140, 100, 80), 0.22, 0.03, 0.05, "white_centre"),
    "vasc": ((150, 40, 70), 0.20, 0.05, 0.08, "lacunae"),
}
_DX_TYPES = ("histo", "follow_up", "consensus", "confocal")
_SITES = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "scalp", "neck", "hand")


@dataclass(frozen=True)
class _Lesion:
    dx: str
    colour: np.ndarray
    radius: float
    irregularity: float
    asymmetry: float
    texture: str | None
    harmonics: np.ndarray  # (k, 2): amplitude, phase of the border's angular harmonics
    seed: int


def _draw_lesion(rng: np.random.Generator, dx: str) -> _Lesion:
    colour, radius, irregularity, asymmetry, texture = _STYLE[dx]
    other = _STYLE[CLASSES[rng.integers(len(CLASSES))]]
    t = rng.uniform(0.0, 0.75)  # blend towards another class: this is what makes the task non-trivial
    mix = lambda a, b: (1 - t) * np.asarray(a, float) + t * np.asarray(b, float)  # noqa: E731
    irregularity_ = float(mix(irregularity, other[2])) * rng.uniform(0.6, 1.4)
    k = np.arange(2, 9)
    harmonics = np.stack([irregularity_ * rng.uniform(0.3, 1.0, k.size) / np.sqrt(k - 1),
                          rng.uniform(0, 2 * np.pi, k.size)], axis=1)
    return _Lesion(
        dx=dx,
        colour=np.clip(mix(colour, other[0]) + rng.normal(0, 18, 3), 10, 245),
        radius=float(mix(radius, other[1])) * rng.uniform(0.8, 1.2),
        irregularity=irregularity_,
        asymmetry=float(mix(asymmetry, other[3])) * rng.uniform(0.5, 1.5),
        texture=texture if rng.random() < 0.7 else (other[4] if rng.random() < 0.3 else None),
        harmonics=harmonics,
        seed=int(rng.integers(2**31)),
    )


def _render(lesion: _Lesion, rng: np.random.Generator, *, width: int, height: int) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    short = min(width, height)
    # Skin background: a random tone with smooth shading and vignetting, as in dermatoscopic photographs.
    skin = np.array([rng.uniform(190, 235), rng.uniform(140, 185), rng.uniform(120, 165)], np.float32)
    cx, cy = width / 2 + rng.normal(0, short * 0.06), height / 2 + rng.normal(0, short * 0.06)
    vignette = 1 - 0.35 * (((xx - width / 2) ** 2 + (yy - height / 2) ** 2) / (0.5 * (width**2 + height**2)))
    img = skin[None, None, :] * vignette[..., None]
    # Lesion mask in polar form: r(theta) = R * (1 + sum a_k cos(k theta + phi_k)), stretched for asymmetry.
    rot = rng.uniform(0, 2 * np.pi)
    dx_, dy_ = xx - cx, yy - cy
    theta = np.arctan2(dy_, dx_) + rot
    dist = np.hypot(dx_, dy_)
    r = np.ones_like(theta)
    for k, (amp, phase) in enumerate(lesion.harmonics, start=2):
        r += amp * np.cos(k * theta + phase)
    r *= 1 + lesion.asymmetry * np.cos(theta)
    r *= lesion.radius * short * rng.uniform(0.9, 1.1)
    softness = short * (0.01 + 0.02 * (1 - min(1.0, lesion.irregularity * 4)))
    alpha = 1 / (1 + np.exp((dist - r) / softness))
    inner = np.clip(1 - dist / np.maximum(r, 1), 0, 1)
    colour = lesion.colour * rng.uniform(0.9, 1.1)
    centre_shade = rng.choice([-0.15, 0.15])  # darker or lighter towards the centre
    lesion_rgb = colour[None, None, :] * (1 + centre_shade * inner[..., None])
    img = img * (1 - alpha[..., None]) + lesion_rgb * alpha[..., None]
    img = _texture(img, lesion, rng, alpha=alpha, inner=inner, xx=xx, yy=yy, short=short)
    img *= rng.uniform(0.85, 1.1)  # exposure
    img += rng.normal(0, 6, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return pil.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 1.2)))


def _texture(img: np.ndarray, lesion: _Lesion, rng: np.random.Generator, *, alpha: np.ndarray, inner: np.ndarray,
             xx: np.ndarray, yy: np.ndarray, short: int) -> np.ndarray:
    tex = lesion.texture
    if tex == "network":
        f = rng.uniform(0.25, 0.45)
        grid = 0.5 + 0.5 * np.sin(xx * f) * np.sin(yy * f)
        return img * (1 - 0.25 * alpha * grid)[..., None]
    if tex == "veil":
        veil = np.array([110, 120, 150], np.float32)
        w = (alpha * np.clip(inner * 1.5 - 0.2, 0, 1) * rng.uniform(0.3, 0.7))[..., None]
        return img * (1 - w) + veil * w
    if tex == "ridges":
        f = rng.uniform(0.3, 0.6)
        ridges = 0.5 + 0.5 * np.sin(xx * f + 3 * np.sin(yy * f * 0.5))
        return img * (1 + 0.2 * alpha * (ridges - 0.5))[..., None]
    if tex == "white_centre":
        w = (alpha * np.clip(inner * 2 - 1, 0, 1) * 0.8)[..., None]
        return img * (1 - w) + np.array([235, 215, 205], np.float32) * w
    if tex in ("vessels", "scales", "lacunae"):
        overlay = Image.new("L", (img.shape[1], img.shape[0]), 0)
        draw = ImageDraw.Draw(overlay)
        ys, xs = np.nonzero(alpha > 0.5)
        if len(xs) == 0:
            return img
        for _ in range(int(rng.integers(6, 14))):
            j = int(rng.integers(len(xs)))
            x, y = float(xs[j]), float(ys[j])
            if tex == "vessels":
                pts = [(x, y)]
                for _ in range(6):
                    x += rng.normal(0, short * 0.05)
                    y += rng.normal(0, short * 0.05)
                    pts.append((x, y))
                draw.line(pts, fill=255, width=max(1, short // 100))
            else:
                rad = short * (0.012 if tex == "scales" else 0.03) * rng.uniform(0.6, 1.4)
                draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=255)
        m = (np.asarray(overlay, np.float32) / 255 * alpha)[..., None]
        target = {"vessels": (200, 30, 40), "scales": (240, 235, 225), "lacunae": (120, 10, 50)}[tex]
        return img * (1 - 0.8 * m) + np.array(target, np.float32) * 0.8 * m
    return img


def generate_synthetic_dataset(
    root: str | Path,
    *,
    num_images: int = 1500,
    width: int = 200,
    height: int = 150,
    seed: int = 0,
    min_lesions_per_class: int = 12,
) -> Path:
    """Write a HAM10000-layout folder (metadata CSV + JPEGs in two ``HAM10000_images_part_*`` folders).

    Returns:
        The path of the metadata CSV.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    shares = np.array([HAM_CLASS_SHARES[c] for c in CLASSES])
    dx_order = [c for c in CLASSES for _ in range(min_lesions_per_class)]  # every class present for the split
    rows: list[dict[str, object]] = []
    lesions: list[tuple[str, _Lesion, int]] = []
    n_images = 0
    while n_images < num_images:
        dx = dx_order.pop() if dx_order else CLASSES[rng.choice(len(CLASSES), p=shares / shares.sum())]
        n = int(min(6, 1 + rng.poisson(0.4)))
        lesions.append((f"HAM_{len(lesions):07d}", _draw_lesion(rng, dx), n))
        n_images += n
    parts = [root / "HAM10000_images_part_1", root / "HAM10000_images_part_2"]
    for p in parts:
        p.mkdir(parents=True, exist_ok=True)
    image_no = 0
    with progress(total=n_images, desc="synthetic images", unit="img") as bar:
        for lesion_id, lesion, n in lesions:
            age = float(np.clip(rng.normal(52, 16), 5, 85) // 5 * 5)
            sex = str(rng.choice(["male", "female"]))
            site = str(rng.choice(_SITES))
            dx_type = str(rng.choice(_DX_TYPES, p=[0.53, 0.37, 0.09, 0.01]))
            lrng = np.random.default_rng(lesion.seed)
            for _ in range(n):
                image_id = f"ISIC_{image_no:07d}"
                folder = parts[0] if image_no < n_images // 2 else parts[1]
                _render(lesion, lrng, width=width, height=height).save(folder / f"{image_id}.jpg", quality=90)
                rows.append({"lesion_id": lesion_id, "image_id": image_id, "dx": lesion.dx, "dx_type": dx_type,
                             "age": age, "sex": sex, "localization": site})
                image_no += 1
                bar.update()
    csv_path = root / HAM_METADATA
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / SYNTHETIC_MARKER).write_text(json.dumps({"generator": "lesionlite synthetic", "seed": seed}))
    log.info("synthetic dataset: %d images of %d lesions in %s", len(rows), len(lesions), root)
    return csv_path


SYNTHETIC_MARKER = "synthetic.json"  # written into every generated dataset: models trained on it say so


def is_synthetic_dataset(root: str | Path) -> bool:
    """Whether ``root`` holds images made by this generator (not real skin)."""
    return (Path(root) / SYNTHETIC_MARKER).is_file()


def ensure_synthetic_dataset(root: str | Path, *, num_images: int = 1500, width: int = 200, height: int = 150,
                             seed: int = 0) -> Path:
    """Generate the synthetic dataset at ``root`` unless one with the same parameters is already there."""
    root = Path(root)
    params = {"num_images": num_images, "width": width, "height": height, "seed": seed, "version": 1}
    marker = root / SYNTHETIC_MARKER
    csv_path = root / HAM_METADATA
    if csv_path.is_file() and marker.is_file() and json.loads(marker.read_text()) == params:
        log.info("synthetic dataset already present: %s", root)
        return csv_path
    if root.exists() and any(root.iterdir()) and not marker.is_file():
        raise DatasetError(f"{root} exists and is not a synthetic dataset made here; choose another folder")
    if root.exists():
        shutil.rmtree(root)
    csv_path = generate_synthetic_dataset(root, num_images=num_images, width=width, height=height, seed=seed)
    marker.write_text(json.dumps(params))
    return csv_path


def synthetic_example(dx: str, *, seed: int = 0, width: int = 600, height: int = 450) -> Image.Image:
    """One synthetic lesion image of class ``dx`` (for demos of the live panel without real data)."""
    if dx not in _STYLE:
        raise ValueError(f"unknown dx {dx!r}; allowed: {', '.join(CLASSES)}")
    rng = np.random.default_rng(seed)
    return _render(_draw_lesion(rng, dx), rng, width=width, height=height)
