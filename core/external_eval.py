"""Score a trained model on any dataset folder (every image is test) and store the result as a run.

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
from core.inference import evaluate
from core.metrics import Evaluation, write_isic_submission
from core.model_io import DEFAULT_MODELS_DIR, load_trained_model
from core.provenance import device_description, git_sha, new_run_id
from core.results import DEFAULT_DB, ResultsStore, RunRecord

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
    """Evaluate a trained model (run id or folder) on every image of ``data_dir``; store it unless ``db`` is None."""
    device = torch.device("cpu")
    model, card, model_dir = load_trained_model(model_ref, models_dir=models_dir, device=device)
    prep = card.preprocessing
    data = prepare_data(data_dir, prep=prep, cache_dir=cache_dir, skip_bad=skip_bad, workers=workers)
    table = data.table.assign(split="test")
    loader = eval_loader(data, table, prep, batch_size=batch_size)
    ev, probs = evaluate(model, loader, device)
    run_id = new_run_id(card.architecture, kind="eval")
    if submission:
        write_isic_submission(submission, table["image_id"].tolist(), probs)
        log.info("wrote ISIC 2018 Task 3 submission: %s", submission)
    if db is not None:
        record = RunRecord(
            run_id=run_id, kind="eval", model=card.architecture, variant=str(card.extra.get("variant", "dense-fp32")),
            config={"model": str(model_dir), "data_dir": str(data_dir), "batch_size": batch_size,
                    "skip_bad": skip_bad, "layout": data.table.attrs.get("layout")},
            dataset=str(data_dir), dataset_fingerprint=data.fingerprint, split_hash=split_hash(table),
            seed=int(card.extra.get("seed", 0)), device=device_description(device), git_sha=git_sha(),
            parent_run_id=card.run_id, evaluations={"test": ev},
        )
        with ResultsStore(db) as store:
            store.record_run(record)
    return ExternalEvaluation(run_id, card.run_id, ev, table["image_id"].tolist(), probs)
