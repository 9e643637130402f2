"""Preprocessing derived from the model's timm data config, and training augmentation.

Images are decoded once into a square uint8 array of side ``cache_size = floor(input_size / crop_pct)``
(shorter side resized, centre cropped), exactly timm's eval resize. Evaluation and serving then centre-crop
``input_size`` and normalise in one NumPy implementation (:func:`eval_array`, NumPy in and out; a test pins
it to training's normalisation); training augments the stored square with torch (after the split, never
before).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import IO, Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

_PIL_INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn an image into model input; stored with every trained model."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    @property
    def cache_size(self) -> int:
        return int(math.floor(self.input_size / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=int(d["input_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            crop_pct=float(d.get("crop_pct", 0.875)),
            interpolation=str(d.get("interpolation", "bicubic")),
        )


def preprocessing_for(model: torch.nn.Module, input_size: int) -> Preprocessing:
    """Resolve preprocessing from the model's timm data config, at ``input_size`` pixels."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({"input_size": (3, input_size, input_size)}, model=model)
    interpolation = cfg.get("interpolation", "bicubic")
    return Preprocessing(
        input_size=input_size,
        mean=tuple(float(x) for x in cfg["mean"]),
        std=tuple(float(x) for x in cfg["std"]),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        interpolation=interpolation if interpolation in _PIL_INTERPOLATION else "bicubic",
    )


def square_crop(img: Image.Image, *, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """RGB image -> uint8 array (size, size, 3): shorter side resized to ``size``, centre cropped."""
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), _PIL_INTERPOLATION[interpolation])
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8).copy()


def decode_square(source: str | IO[bytes], *, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """Decode an image file to an RGB uint8 array of shape (size, size, 3) (see :func:`square_crop`).

    Raises the decoder's own error (``OSError``, ``PIL.UnidentifiedImageError``, ...) for unreadable files.
    """
    with Image.open(source) as img:
        img.draft("RGB", (size, size))  # JPEG: decode at reduced scale when the file is much larger
        return square_crop(img, size=size, interpolation=interpolation)


def normalization(prep: Preprocessing) -> list[v2.Transform]:
    """Training's last steps (uint8 -> float in [0, 1] -> normalised); :func:`eval_array` is pinned to them."""
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(prep.mean), std=list(prep.std))]


class RandomRot90(torch.nn.Module):
    """Rotate by a random multiple of 90 degrees (dermoscopy has no canonical orientation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, 4, ()).item())
        return torch.rot90(x, k, dims=(-2, -1)) if k else x


class ToCHWTensor(torch.nn.Module):
    """HWC uint8 array (a cache row) -> CHW uint8 tensor."""

    def forward(self, square: np.ndarray) -> torch.Tensor:
        return to_chw_tensor(square)


AUG_POLICIES = ("basic", "isic")


def train_transform(prep: Preprocessing, *, scale_min: float = 0.5, color_jitter: float = 0.1,
                    policy: str = "basic", from_tensor: bool = False) -> v2.Compose:
    """Training augmentation of an HWC uint8 square (or, ``from_tensor``, a CHW uint8 tensor on any device), then
    the normalisation that :func:`eval_array` repeats in NumPy.

    ``basic``: random resized crop, flips, 90-degree rotations, mild colour jitter (no hue). ``isic``: what the
    ISIC 2019/2020 winners add to that (ngessert/isic2019; the SIIM-ISIC 1st place): rotation by any angle with
    scale 0.8-1.2 and a 10% shift, brightness/contrast/saturation 0.2 and a small hue jitter, and cutout (one
    erased rectangle of up to 14% of the image, p = 0.7)."""
    if policy not in AUG_POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; allowed: {', '.join(AUG_POLICIES)}")
    isic = policy == "isic"
    steps: list[torch.nn.Module] = [
        *([] if from_tensor else [ToCHWTensor()]),
        v2.RandomResizedCrop(prep.input_size, scale=(scale_min, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        RandomRot90(),
    ]
    if isic:
        steps.append(v2.RandomAffine(degrees=180, translate=(0.1, 0.1), scale=(0.8, 1.2)))
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
    elif color_jitter > 0:
        # No hue jitter: lesion colour is diagnostic, and hue conversion is the slowest step on CPU.
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    # Cutout after normalisation: the erased rectangle is 0, the dataset's mean colour.
    cutout = [v2.RandomErasing(p=0.7, scale=(0.02, 0.14), ratio=(0.5, 2.0), value=0)] if isic else []
    return v2.Compose([*steps, *normalization(prep), *cutout])


def to_chw_tensor(square: np.ndarray) -> torch.Tensor:
    """HWC uint8 array -> CHW uint8 tensor (copies read-only memory-mapped rows: torch needs writable memory)."""
    if not square.flags.writeable or not square.flags.c_contiguous:
        square = np.array(square, copy=True, order="C")
    return torch.from_numpy(square).permute(2, 0, 1)


def image_array(source: str | IO[bytes] | Image.Image, prep: Preprocessing) -> np.ndarray:
    """One image file (or decoded image) -> model input (3, H, W) float32: the same path as evaluation."""
    if isinstance(source, Image.Image):
        square = square_crop(source, size=prep.cache_size, interpolation=prep.interpolation)
    else:
        square = decode_square(source, size=prep.cache_size, interpolation=prep.interpolation)
    return eval_array(square, prep)


def center_offset(size: int, crop: int) -> int:
    """Top/left offset of a centred crop, rounded as torchvision's CenterCrop does."""
    return int(round((size - crop) / 2.0))


def center_crop(square: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size`` x ``size`` crop of an HWC array (what the model sees)."""
    off = center_offset(square.shape[0], size)
    return square[off:off + size, off:off + size]


def eval_array(square: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Evaluation and serving preprocessing: HWC uint8 square -> CHW float32, centre-cropped and normalised.

    NumPy, not torch: torch's OpenMP threads keep spinning after a tiny op and slow down the ONNX Runtime call
    that follows (measured 2-3x in scripts/bench_dashboard.py). A test pins it to training's normalisation.
    """
    crop = center_crop(square, prep.input_size).astype(np.float32) / 255.0
    mean, std = np.asarray(prep.mean, np.float32), np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(((crop - mean) / std).transpose(2, 0, 1))
