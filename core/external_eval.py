"""Score a trained model or deployable variant (PyTorch or ONNX) on any dataset folder; every image is test.

The result is stored as a run.

This is how an independent test set is scored: the dataset fingerprint and the image list's hash are
recorded with the run, which points to the trained model's run as its parent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.data.prepare import eval_loader, prepare_data
from core.data.split import split_hash
from core.inference import predictor_probs
from core.metrics import Evaluation, evaluate_predictions, write_isic_submission
from core.model_io import DEFAULT_MODELS_DIR
from core.provenance import device_description, git_sha, new_run_id
from core.results import DEFAULT_DB, Predictions, ResultsStore, RunRecord
from core.variants import load_predictor

log = logging.getLogger(__name__)


@dataclass
class ExternalEvaluation:
    run_id: str
    model_run_id: str
    evaluation: Evaluation
    image_ids: list[str]
    probs: np.ndarray


def evaluate_on_folder(
    model_ref: str | Path,
    data_dir: str | Path,
    *,
    models_dir: str | Path = DEFAULT_MODELS_DIR,
    db: str | Path | None = DEFAULT_DB,
    cache_dir: str | Path = "results/cache",
    batch_size: int = 64,
    skip_bad: bool = False,
    submission: str | Path | None = None,
    workers: int = 2,
) -> ExternalEvaluation:
    """Evaluate a trained model or deployable variant (run id or folder) on every image of ``data_dir``.

    The result is stored as an ``eval`` run whose parent is the model's training run, unless ``db`` is None.
    """
    predictor = load_predictor(model_ref, models_dir=models_dir)
    card, prep = predictor.card, predictor.preprocessing
    data = prepare_data(data_dir, prep=prep, cache_dir=cache_dir, skip_bad=skip_bad, workers=workers)
    table = data.table.assign(split="test")
    loader = eval_loader(data, table, prep, batch_size=batch_size)
    probs, labels = predictor_probs(predictor, loader)
    ev = evaluate_predictions(labels, probs)
    run_id = new_run_id(card["architecture"], kind="eval")
    parent = card.get("parent_run_id") or card["run_id"]
    if submission:
        write_isic_submission(submission, table["image_id"].tolist(), probs)
        log.info("wrote ISIC 2018 Task 3 submission: %s", submission)
    if db is not None:
        record = RunRecord(
            run_id=run_id, kind="eval", model=card["architecture"], variant=str(card.get("variant", "dense-fp32")),
            config={"model": str(model_ref), "data_dir": str(data_dir), "batch_size": batch_size,
                    "skip_bad": skip_bad, "layout": data.table.attrs.get("layout")},
            dataset=str(data_dir), dataset_fingerprint=data.fingerprint, split_hash=split_hash(table),
            seed=int(card.get("seed", 0)), device=device_description(torch.device("cpu")), git_sha=git_sha(),
            parent_run_id=parent, evaluations={"test": ev},
            predictions={"test": Predictions(table["image_id"].tolist(), labels, probs)},
        )
        with ResultsStore(db) as store:
            store.record_run(record)
    return ExternalEvaluation(run_id, parent, ev, table["image_id"].tolist(), probs)
