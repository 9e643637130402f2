"""Grad-CAM over the crop the model saw: map and crop line up, and models without gradients get none."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from core.artifacts.card import Card
from core.artifacts.records import Origin
from core.data.synthetic import synthetic_example
from core.data.transforms import preprocessing_for
from core.models import create_model
from core.serve.gradcam import grad_cam_view
from core.serve.imaging import check_image, reencode_jpeg
from core.serve.predict import TorchPredictor


def _predictor(size: int = 64) -> TorchPredictor:
    torch.manual_seed(0)
    model = create_model("test_efficientnet", pretrained=False)
    return TorchPredictor(model, Card(run_id="t", architecture="test_efficientnet",
                                      preprocessing=preprocessing_for(model, size), origin=Origin.untrained()))


def test_cam_lines_up_with_the_crop_the_model_saw() -> None:
    pred = _predictor()
    image = check_image(reencode_jpeg(synthetic_example("mel", width=300, height=200))).image
    view = grad_cam_view(pred, image)
    assert view is not None
    size = pred.preprocessing.input_size
    assert view.crop.shape == (size, size, 3) and view.crop.dtype == np.uint8
    assert view.cam.shape == (size, size)  # pixel for pixel over the crop, not over the whole photo
    assert view.cam.min() >= 0.0 and view.cam.max() <= 1.0 + 1e-6
    # the crop is the image's centre: its mean colour is the centre's, not the border's
    centre = np.asarray(image.convert("RGB").crop((50, 0, 250, 200)).resize((size, size)), dtype=float)
    assert np.abs(view.crop.astype(float).mean((0, 1)) - centre.mean((0, 1))).max() < 12


def test_no_cam_without_gradients() -> None:
    class NoModel:
        preprocessing = _predictor().preprocessing

    assert grad_cam_view(NoModel(), Image.new("RGB", (64, 64))) is None
