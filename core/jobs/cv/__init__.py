"""Cross-validation of a training recipe: k lesion-grouped folds, every image scored once out of fold.

Each fold's model is trained with the recipe for its fixed number of epochs on the other folds and scored on its
own fold (never selected on it: the held-out fold is the out-of-fold estimate, so the last epoch's weights are
kept). The held-out logits of every epoch are kept too, so the out-of-fold learning curve can fix the epoch count
of a final model. Each fold is stored as a run of kind ``cv_fold`` (held-out predictions as split ``oof``, the
fixed test split as ``test``, with flip test-time augmentation as ``oof_tta`` / ``test_tta``); once every fold is
stored, the pooled out-of-fold figures with their lesion-level intervals, TTA's paired gain and the fold
ensemble's test figures are stored as one run of kind ``cv`` whose id names the cross-validation.

Resumable: a fold already in the store is skipped, and a fold interrupted mid-way continues from its last
epoch's checkpoint (``--cv-resume``).

Modules: context (settings, folder, resume) <- fold (one fold) <- summary (every fold pooled) <- ray (folds as
Ray tasks) <- run (the driver).
"""

from core.jobs.cv.context import CV_FILE, CVConfig, CVContext, CVResult, fold_run_id, open_cv
from core.jobs.cv.run import run_cv

__all__ = ["CV_FILE", "CVConfig", "CVContext", "CVResult", "fold_run_id", "open_cv", "run_cv"]
