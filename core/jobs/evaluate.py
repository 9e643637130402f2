"""Score a trained model or deployable variant (PyTorch or ONNX) on any dataset folder, as it is deployed (its
calibration and "uncertain" threshold, through :class:`~core.serve.deployed.DeployedModel`); every image is test.

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

from core.artifacts.card import DEFAULT_MODELS_DIR
from core.data.cache import DEFAULT_CACHE_DIR
from core.data.prepare import PreparedSplit, prepare_data
from core.metrics import Evaluation, evaluate_predictions, write_isic_submission
from core.provenance import Provenance, new_run_id
from core.serve.deployed import DeployedModel
from core.store.results import DEFAULT_DB, Predictions, ResultsStore, RunRecord

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
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    batch_size: int = 64,
    skip_bad: bool = False,
    submission: str | Path | None = None,
    workers: int = 2,
    tta: bool = False,
) -> ExternalEvaluation:
    """Evaluate a trained model or deployable variant (run id or folder) on every image of ``data_dir``.

    The result is stored as an ``eval`` run whose parent is the model's training run, unless ``db`` is None.
    """
    deployed = DeployedModel.load(model_ref, models_dir=models_dir, tta=tta, threads=0)
    card = deployed.card
    data = prepare_data(data_dir, prep=card.preprocessing, cache_dir=cache_dir, skip_bad=skip_bad, workers=workers)
    split = PreparedSplit(data, data.table.assign(split="test"), card.preprocessing)
    scores = deployed.score(split.loader("test", batch_size=batch_size))
    probs, labels = scores.probs, scores.labels
    ev = evaluate_predictions(labels, probs, groups=split.table["lesion_id"].to_numpy(), triage=card.triage)
    ev.metrics.update(scores.deployment_metrics(card.triage))
    run_id = new_run_id(card.architecture, kind="eval")
    image_ids = split.table["image_id"].tolist()
    if submission:
        write_isic_submission(submission, image_ids, probs)
        log.info("wrote ISIC 2018 Task 3 submission: %s", submission)
    if db is not None:
        provenance = Provenance.here(dataset=data_dir, dataset_fingerprint=data.fingerprint, split_hash=split.hash,
                                     seed=card.origin.seed, device=torch.device("cpu"))
        record = RunRecord(
            run_id=run_id, kind="eval", model=card.architecture, variant=card.variant + ("+tta" if tta else ""),
            provenance=provenance,
            config={"model": str(model_ref), "data_dir": str(data_dir), "batch_size": batch_size,
                    "skip_bad": skip_bad, "layout": data.table.attrs.get("layout"), "tta": tta},
            parent_run_id=card.lineage_run_id, evaluations={"test": ev},
            predictions={"test": Predictions(image_ids, labels, probs)},
        )
        with ResultsStore(db) as store:
            store.record_run(record)
    return ExternalEvaluation(run_id, card.lineage_run_id, ev, image_ids, probs)
