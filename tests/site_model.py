"""A tiny deployed model for the site's tests, built once per session without a sweep.

The site serves a variant folder (an ONNX file beside its card). A sweep makes one from a trained parent in minutes
(pruning, fine-tuning, several modes, latency); the web tests need only the kind of variant production serves, a
calibrated static-int8 ONNX file, so this one is the tiny parent itself, trained for two epochs on the synthetic
images, exported and quantized by the library's own exporter and quantizer, calibrated and scored on its own int8
outputs as a sweep cell is (so its card's figures are the int8 file's), and written by the variant writer: seconds,
not minutes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from core.artifacts.card import load_trained_model, write_variant
from core.compress.export import export_onnx
from core.compress.modes import mode_of
from core.compress.quantize import quantize_onnx
from core.jobs.train import run_training
from core.serve.facts import card_metrics
from core.serve.predict import OnnxPredictor, predict_logits
from core.train.evaluation import score_outputs
from core.train.parent import load_parent
from tests.configs import tiny_config

VARIANT = "dense-static"  # as the sweep names a dense static-int8 cell


def build_site_model(data: Path, out: Path) -> Path:
    """Train a tiny EfficientNet on ``data`` and write it under ``out`` as a static-int8 ONNX variant; its folder."""
    trained = run_training(tiny_config(data, out, model="test_efficientnet"))
    model, card, _ = load_trained_model(trained.run_dir)
    folder = out / "variants" / trained.run_id / VARIANT
    export_onnx(model, out / "fp32.onnx", input_size=card.preprocessing.input_size)
    split = load_parent(str(trained.run_dir)).split
    calibration = split.arrays("train", 16, seed=1)[0]
    folder.mkdir(parents=True)
    quantize_onnx(out / "fp32.onnx", folder / "model.onnx", mode=mode_of("static").onnx_quantize,
                  calibration=calibration)
    variant = dataclasses.replace(card, run_id=f"{card.run_id}-{VARIANT}", variant=VARIANT,
                                  parent_run_id=card.run_id)
    predictor = OnnxPredictor(folder / "model.onnx", variant, threads=1)
    outputs = {name: (split.rows(name), predict_logits(predictor, split.loader(name, batch_size=64))[0])
               for name in ("val", "test")}
    variant.calibrate(outputs["val"][1], split.rows("val")["label"].to_numpy())
    variant.metrics = card_metrics(score_outputs(variant, outputs)[0])
    write_variant(folder, model_file="model.onnx", card=variant)
    return folder
