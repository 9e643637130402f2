"""The deployed model: one compressed variant, loaded once per process.

Which one: ``LESIONLITE_VARIANT`` (a variant folder), else the static-int8 variant with the best validation
balanced accuracy in the results store (``LESIONLITE_DB``).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flask import current_app

from core.analysis import deployed_variant
from core.classes import CLASSES, clinical_name
from core.errors import ModelError
from core.imaging import CheckedImage
from core.live import predict_checked
from core.results import ResultsStore
from core.variants import Predictor, load_predictor

log = logging.getLogger(__name__)
_lock = threading.Lock()
_loaded: dict[str, Predictor] = {}


@functools.lru_cache(maxsize=8)
def best_int8_variant(db: str) -> Path:
    """The store's default deployable variant (:func:`core.analysis.deployed_variant`), looked up once per process."""
    try:
        with ResultsStore(db, read_only=True) as store:
            return deployed_variant(store)
    except ModelError as exc:
        raise ModelError(f"{db}: {exc}; or set LESIONLITE_VARIANT") from None


def variant_folder() -> Path:
    configured = current_app.config.get("LESIONLITE_VARIANT")
    return Path(configured) if configured else best_int8_variant(str(current_app.config["LESIONLITE_DB"]))


def get_predictor() -> Predictor:
    folder = str(variant_folder())
    with _lock:
        if folder not in _loaded:
            _loaded[folder] = load_predictor(folder, threads=1)
            log.info("loaded model %s", folder)
        return _loaded[folder]


@dataclass
class Detection:
    top_class: str
    clinical_name: str
    confidence: float
    probs: dict[str, float]
    uncertain: bool
    model_version: str


def model_version(predictor: Predictor) -> str:
    card = predictor.card
    return f"{card.get('architecture', '?')} {card.get('variant', '?')} ({card.get('run_id', '?')})"


def detect(checked: CheckedImage) -> Detection:
    predictor = get_predictor()
    result = predict_checked(predictor, checked, name="deployed")
    probs = {c: float(p) for c, p in zip(CLASSES, np.asarray(result.probs), strict=True)}
    uncertain = result.confidence < float(current_app.config["UNCERTAIN_THRESHOLD"])
    return Detection(result.top, clinical_name(result.top), result.confidence, probs, uncertain,
                     model_version(predictor))


def detection_json(d: Detection) -> str:
    return json.dumps(d.probs)
