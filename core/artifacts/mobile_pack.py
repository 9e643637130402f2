"""One variant's phone files and an app-facing JSON of its card, in one folder for a mobile developer.

The JSON says everything an app needs and nothing it must guess: the input (size, resize-then-centre-crop,
interpolation, mean / std, RGB, NCHW float32), the output (class order, clinical names, the temperature that turns
logits into calibrated probabilities, the "uncertain" threshold, the screening operating points), and per file the
runtime, its version, the operator list where the runtime makes one, and how well the file agreed with its source.
With a metadata fusion, it also says how an app combines the calibrated probabilities with age, sex and body site:
the feature order, the vocabularies, the matrix and its own temperature, threshold and operating points.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from core.artifacts.card import CARD_NAME, Card, is_variant_folder, read_variant_card
from core.artifacts.mobile_runtimes import OPERATORS_FILE
from core.classes import clinical_name
from core.errors import ModelError
from core.fusion import LOCALIZATIONS, SEXES, MetadataFusion
from core.triage import DISCLAIMER

APP_CARD_NAME = "lesionlite-app.json"
APP_FORMAT = "lesionlite-app/2"  # 2: an optional metadata_fusion section


def mobile_folders(variants_dir: str | Path, stem: str) -> list[Path]:
    """The phone-format cells of one model in a sweep's variants folder: ``<stem>-ort_*``, ``<stem>-pte_*``,
    ``<stem>-tflite_*`` (e.g. stem ``dense`` or ``macs-0.5``)."""
    folders = sorted(p for p in Path(variants_dir).glob(f"{stem}-*") if is_variant_folder(p) and _runtime_of(p))
    if not folders:
        raise ModelError(f"{variants_dir}: no phone-format cells named {stem}-ort_*, {stem}-pte_* or "
                         f"{stem}-tflite_* (run the sweep with modes ort_fp32, pte_fp32, tflite_fp32, ...)")
    return folders


def _runtime_of(folder: Path) -> str | None:
    deployment = read_variant_card(folder).deployment
    return deployment.runtime.name if deployment and deployment.runtime else None


def app_fusion(fusion: MetadataFusion) -> dict[str, Any]:
    """How an app applies a metadata fusion, from the record itself: features in order, then softmax of
    (features @ coef.T + intercept), then that softmax's log divided by the fusion's temperature, softmaxed again."""
    vocabularies = {"sex": [*SEXES, "(missing)"], "localization": [*LOCALIZATIONS, "(missing)"]}
    return {
        "when": "only when the person gives at least one of the fields; otherwise the file's own answer, unchanged",
        "features": ["log(max(p, 1e-7)) of each class's calibrated probability, in the output's class order",
                     *[{"age": "age / 100, then 1 if age is missing else 0 (age 0 when missing)",
                        "sex": "one-hot over sex_values (the last column: missing or anything else)",
                        "localization": "one-hot over localization_values (the last column: missing or unknown)"}[f]
                       for f in fusion.stack.fields]],
        "sex_values": vocabularies["sex"], "localization_values": vocabularies["localization"],
        **fusion.stack.to_dict(),
        "then": "q = softmax(features @ coef.T + intercept) over classes; probabilities = softmax(log(max(q, 1e-7)) "
                "/ temperature)",
        "temperature": fusion.temperature, "uncertain_below_confidence": fusion.uncertain_threshold,
        "screening": fusion.triage.to_dict(), "fitted_on": fusion.fitted_on,
        "balanced_accuracy_cross_fitted": {k: fusion.cross_fitted[k]["balanced_accuracy"] for k in ("image", "fused")},
    }


def app_card(card: Card, files: list[dict[str, Any]], *, fusion: MetadataFusion | None = None) -> dict[str, Any]:
    """What an app reads: input, output and the files (each with its own calibration, fitted on validation), from
    the variants' cards (never typed in by hand); ``fusion`` (default: the card's) adds how to fuse metadata."""
    prep = card.preprocessing
    return {
        "format": APP_FORMAT,
        "model": {"architecture": card.architecture, "run_id": card.run_id, "parent_run_id": card.parent_run_id,
                  "git_sha": card.origin.git_sha, "data_licence": card.origin.data_licence},
        "input": {"layout": "NCHW", "dtype": "float32", "batch": 1, "channels": "RGB",
                  "height": prep.input_size, "width": prep.input_size,
                  "resize_shorter_side_to": prep.cache_size, "interpolation": prep.interpolation,
                  "then": f"centre crop {prep.input_size}x{prep.input_size}, divide by 255, subtract mean, "
                          "divide by std (per channel)",
                  "mean": list(prep.mean), "std": list(prep.std)},
        "output": {"logits": len(card.classes), "classes": list(card.classes),
                   "clinical_names": [clinical_name(c) for c in card.classes],
                   "probabilities": "softmax(logits / temperature), with each file's own temperature",
                   "uncertain": "top probability below the file's uncertain_below_confidence"},
        "files": files,
        "metadata_fusion": app_fusion(fusion or card.fusion) if (fusion or card.fusion) else None,
        "disclaimer": DISCLAIMER,
    }


def pack_mobile(folders: list[Path], out_dir: str | Path, *, fusion: MetadataFusion | None = None) -> Path:
    """Copy each folder's phone file (and its operator list) into ``out_dir`` and write :data:`APP_CARD_NAME`
    (with ``fusion``, or the first card's, when there is one). The folders must be cells of one model (same parent
    run and preprocessing)."""
    out_dir = Path(out_dir)
    cards = [read_variant_card(f) for f in folders]
    if len({(c.parent_run_id, c.preprocessing) for c in cards}) != 1:
        raise ModelError("these variants come from different models (parent run or preprocessing differ): "
                         + ", ".join(c.variant for c in cards))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for folder, card in zip(folders, cards, strict=True):
        deployment = card.deployment
        if deployment is None or deployment.runtime is None:
            raise ModelError(f"{folder}: not a phone-format cell (its card names no runtime)")
        name = f"{card.variant}{Path(str(card.file)).suffix}"
        shutil.copyfile(folder / str(card.file), out_dir / name)
        operators = None
        if (folder / OPERATORS_FILE).is_file():
            operators = f"{card.variant}.{OPERATORS_FILE}"
            shutil.copyfile(folder / OPERATORS_FILE, out_dir / operators)
        check, latency = deployment.export_check, deployment.latency
        files.append({"file": name, "variant": card.variant, "runtime": deployment.runtime.name,
                      "runtime_version": deployment.runtime.version, "operators": operators,
                      "size_bytes": deployment.size_bytes,
                      "export_check": dataclasses.asdict(check) if check else None,
                      "test_balanced_accuracy": card.metrics.get("test", {}).get("balanced_accuracy"),
                      "latency_ms_x86_proxy": latency.b1_median if latency else None,
                      "temperature": card.temperature, "uncertain_below_confidence": card.uncertain_threshold,
                      "screening": card.triage.to_dict() if card.triage else None,
                      "source_card": f"{folder.name}/{CARD_NAME}"})
    app = app_card(cards[0], files, fusion=fusion)
    (out_dir / APP_CARD_NAME).write_text(json.dumps(app, indent=2, default=str))
    return out_dir / APP_CARD_NAME
