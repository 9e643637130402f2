"""Grad-CAM for timm CNNs (Selvaraju et al. 2017) on the last feature map, over the crop the model saw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.data.transforms import center_crop, image_array, square_crop

if TYPE_CHECKING:
    from core.serve.predict import Predictor


def grad_cam(model: nn.Module, image: torch.Tensor, *, target: int | None = None) -> np.ndarray:
    """Class-activation map in [0, 1] at the input's resolution for a batch of one.

    Uses timm's ``forward_features`` / ``forward_head`` split, so it works for every registered architecture,
    pruned or not.
    """
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise TypeError("Grad-CAM needs a timm model with forward_features/forward_head")
    model.eval()
    with torch.enable_grad():
        features = model.forward_features(image)
        features.retain_grad()
        logits = model.forward_head(features)
        cls = int(logits.argmax(1)) if target is None else target
        model.zero_grad(set_to_none=True)
        logits[0, cls].backward()
    weights = features.grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * features).sum(dim=1, keepdim=True)).detach()
    cam = nn.functional.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam -= cam.min()
    return (cam / cam.max()).numpy() if cam.max() > 0 else cam.numpy()


@dataclass(frozen=True)
class CamView:
    """What the model saw (its centre crop, RGB uint8) and the Grad-CAM map over it (same height and width, [0, 1]):
    drawn together they line up pixel for pixel."""

    crop: np.ndarray
    cam: np.ndarray


def grad_cam_view(predictor: Predictor, image: Image.Image) -> CamView | None:
    """Grad-CAM of the predicted class over the crop the model saw, for PyTorch predictors; None for ONNX or
    quantized ones (no gradients)."""
    model = getattr(predictor, "model", None)
    if model is None or not hasattr(model, "forward_features"):
        return None
    if any("quantized" in type(m).__module__ for m in model.modules()):
        return None
    prep = predictor.preprocessing
    cam = grad_cam(model, torch.from_numpy(image_array(image, prep)[None]))
    square = square_crop(image, size=prep.cache_size, interpolation=prep.interpolation)
    return CamView(crop=center_crop(square, prep.input_size), cam=cam)
