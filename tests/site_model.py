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
import shutil
from pathlib import Path

import numpy as np

from core.artifacts.card import load_trained_model, write_variant
from core.classes import CLASSES
from core.compress.export import export_onnx
from core.compress.modes import mode_of
from core.compress.quantize import quantize_onnx
from core.fusion import LOCALIZATIONS, METADATA_FIELDS, SEXES, LogisticStack, MetadataFusion
from core.jobs.fusion_fit import attach_fusion
from core.jobs.train import run_training
from core.serve.facts import card_metrics
from core.serve.predict import OnnxPredictor, predict_logits
from core.train.evaluation import score_outputs
from core.train.parent import load_parent
from core.triage import MALIGNANT_GROUP, MELANOMA_GROUP, OperatingPoint, Triage
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


def site_fusion() -> MetadataFusion:
    """A metadata fusion made by hand for the site's tests: the image model's log-probabilities pass through
    unchanged, and a foot (HAM10000's "foot") adds 8 to melanoma's logit, so the body site visibly changes the
    answer; its own operating points and "uncertain" threshold differ from any fitted card's."""
    fields = METADATA_FIELDS
    columns = len(CLASSES) + 2 + len(SEXES) + 1 + len(LOCALIZATIONS) + 1
    coef = np.zeros((len(CLASSES), columns))
    coef[:, :len(CLASSES)] = np.eye(len(CLASSES))
    coef[CLASSES.index("mel"), len(CLASSES) + 2 + len(SEXES) + 1 + LOCALIZATIONS.index("foot")] = 8.0
    stack = LogisticStack(fields, coef, np.zeros(len(CLASSES)), tuple(range(len(CLASSES))))
    triage = Triage(OperatingPoint(MALIGNANT_GROUP, 0.6, 0.9, 0.9, 0.7, 10),
                    OperatingPoint(MELANOMA_GROUP, 0.4, 0.85, 0.85, 0.7, 5))
    return MetadataFusion(stack=stack, temperature=1.0, uncertain_threshold=0.3, triage=triage,
                          fitted_on={"cv_id": "by hand", "images": 1234},
                          cross_fitted={"image": {"balanced_accuracy": [0.5, 0.4, 0.6]},
                                        "fused": {"balanced_accuracy": [0.6, 0.5, 0.7]}})


def fused_copy(folder: Path, out: Path) -> Path:
    """A copy of the variant in ``folder`` whose card carries :func:`site_fusion`."""
    shutil.copytree(folder, out)
    attach_fusion(out, site_fusion())
    return out
