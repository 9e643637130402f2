"""Lesion-grouped, dx-stratified k-fold assignment for cross-validation.

The folds cover the rows outside the fixed test split (train + val of the run's split), so the test split
stays untouched for the one final look at the chosen model, its fold ensemble and its distilled student
(those have no out-of-fold score: every labelled image trained some of their members). Every fold holds
whole lesions: no lesion's images are in two folds, and every image is out of fold exactly once.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from core.data.split import content_hash, read_canonical, write_canonical
from core.errors import DatasetError

log = logging.getLogger(__name__)

FOLD_COLUMNS = ["image_id", "lesion_id", "dx", "fold"]
TEST_FOLD = -1  # rows of the fixed test split: never in a fold's training or held-out rows


def make_folds(table: pd.DataFrame, *, k: int = 5, seed: int = 0) -> pd.DataFrame:
    """Assign every non-test row a fold in ``0..k-1`` (grouped by ``lesion_id``, stratified by ``label``).

    ``table`` carries a ``split`` column (train / val / test); test rows get fold :data:`TEST_FOLD`.
    Returns a copy sorted by image_id with a ``fold`` column.
    """
    if k < 2:
        raise DatasetError(f"cross-validation needs at least 2 folds, got {k}")
    for column in ("image_id", "lesion_id", "label", "split"):
        if column not in table.columns:
            raise DatasetError(f"make_folds needs a {column!r} column")
    out = table.sort_values("image_id").reset_index(drop=True).copy()
    pool = np.flatnonzero(out["split"].to_numpy() != "test")
    n_lesions = out.iloc[pool]["lesion_id"].nunique()
    if n_lesions < k:
        raise DatasetError(f"too few lesions ({n_lesions}) outside the test split for {k} folds")
    fold = np.full(len(out), TEST_FOLD, dtype=np.int64)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # classes rarer than k lesions: still grouped, only less stratified
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        rows = out.iloc[pool]
        for i, (_, held) in enumerate(cv.split(np.zeros(len(rows)), rows["label"].to_numpy(),
                                               rows["lesion_id"].to_numpy())):
            fold[pool[held]] = i
    out["fold"] = fold
    check_folds(out, k)
    log.info("%d folds (seed %d) over %d images of %d lesions; %d test images kept out", k, seed, len(pool),
             n_lesions, int((fold == TEST_FOLD).sum()))
    return out


def check_folds(folds: pd.DataFrame, k: int) -> None:
    """Raise unless every non-test row is in one fold of ``0..k-1`` and no lesion spans two folds or test."""
    bad = sorted(set(folds["fold"].astype(int)) - set(range(k)) - {TEST_FOLD})
    if bad:
        raise DatasetError(f"fold value(s) {bad} outside 0..{k - 1}")
    per_lesion = folds.groupby("lesion_id")["fold"].nunique()
    leaked = per_lesion[per_lesion > 1].index.tolist()
    if leaked:
        raise DatasetError(f"{len(leaked)} lesion(s) appear in more than one fold, e.g. {', '.join(leaked[:5])}")
    empty = [i for i in range(k) if not (folds["fold"] == i).any()]
    if empty:
        raise DatasetError(f"fold(s) {empty} hold no images")


def fold_split(folds: pd.DataFrame, fold: int) -> pd.DataFrame:
    """The train / val / test table of one fold: the fold itself is "val" (held out), test stays test."""
    out = folds.copy()
    out["split"] = np.where(out["fold"] == TEST_FOLD, "test", np.where(out["fold"] == fold, "val", "train"))
    return out


def all_labelled_split(folds: pd.DataFrame) -> pd.DataFrame:
    """Every non-test row as "train" (a final model on train + val), test stays test, no validation rows."""
    out = folds.copy()
    out["split"] = np.where(out["fold"] == TEST_FOLD, "test", "train")
    return out


def folds_hash(folds: pd.DataFrame) -> str:
    """Content hash of a fold assignment; the cross-validation's "split hash" in the store."""
    return content_hash(folds, FOLD_COLUMNS)


def save_folds(folds: pd.DataFrame, path: str | Path) -> str:
    return write_canonical(folds, path, FOLD_COLUMNS)


def load_folds(path: str | Path) -> pd.DataFrame:
    return read_canonical(path, FOLD_COLUMNS, what="fold",
                          dtype={"image_id": str, "lesion_id": str, "dx": str, "fold": int})


def apply_folds(table: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    """Attach a stored fold assignment to a dataset table; every image must have one."""
    merged = table.drop(columns=[c for c in ("split", "fold") if c in table.columns]).merge(
        folds[["image_id", "fold"]], on="image_id", how="left")
    missing = merged.loc[merged["fold"].isna(), "image_id"].tolist()
    if missing:
        raise DatasetError(f"{len(missing)} image(s) have no fold in the stored assignment, e.g. "
                           f"{', '.join(missing[:5])}")
    merged["fold"] = merged["fold"].astype(int)
    return merged.sort_values("image_id").reset_index(drop=True)
