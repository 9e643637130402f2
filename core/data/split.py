"""Train/val/test splits grouped by ``lesion_id`` and stratified by dx.

HAM10000 has several images of most lesions; a split by image would put near-duplicates of one lesion in
both train and test and inflate every test figure. Here no lesion appears in two splits.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from core.errors import DatasetError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ["image_id", "lesion_id", "dx", "split"]


def _holdout(df: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a lesion-grouped, dx-stratified holdout of about ``fraction`` of the rows."""
    n_splits = max(2, round(1 / fraction))
    n_lesions = df["lesion_id"].nunique()
    if n_lesions < n_splits:
        raise DatasetError(f"too few lesions ({n_lesions}) for a {fraction:.0%} holdout; need at least {n_splits}")
    # Classes rarer than n_splits lesions make sklearn warn; the split is still grouped, only less stratified.
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, hold = next(cv.split(np.zeros(len(df)), df["label"].to_numpy(), df["lesion_id"].to_numpy()))
    mask = np.zeros(len(df), dtype=bool)
    mask[hold] = True
    return mask


def make_split(df: pd.DataFrame, *, val_fraction: float = 0.1, test_fraction: float = 0.1,
               seed: int = 0) -> pd.DataFrame:
    """Assign each row to train/val/test, grouped by lesion_id and stratified by dx.

    Returns:
        A copy of ``df`` with a ``split`` column, sorted by image_id.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < frac < 0.5:
            raise DatasetError(f"{name} must be between 0 and 0.5, got {frac}")
    df = df.sort_values("image_id").reset_index(drop=True)
    if "label" not in df.columns:
        raise DatasetError("make_split needs a 'label' column (use core.data.layout to read the table)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        test = _holdout(df, test_fraction, seed)
        rest = df[~test]
        val_rest = _holdout(rest, val_fraction / (1 - test_fraction), seed + 1)
    split = np.full(len(df), "train", dtype=object)
    split[test] = "test"
    split[np.flatnonzero(~test)[val_rest]] = "val"
    out = df.copy()
    out["split"] = split
    check_grouped(out)
    counts = out["split"].value_counts()
    log.info("split (seed %d): %s", seed, ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS))
    return out


def check_grouped(df: pd.DataFrame) -> None:
    """Raise if any lesion_id appears in more than one split."""
    per_lesion = df.groupby("lesion_id")["split"].nunique()
    leaked = per_lesion[per_lesion > 1].index.tolist()
    if leaked:
        raise DatasetError(f"{len(leaked)} lesion(s) appear in more than one split, e.g. {', '.join(leaked[:5])}")


def canonical_csv(df: pd.DataFrame, columns: list[str]) -> bytes:
    """Canonical CSV of an assignment table (sorted by image_id, fixed columns): what is hashed and persisted."""
    buf = io.StringIO()
    df.sort_values("image_id")[columns].to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode()


def content_hash(df: pd.DataFrame, columns: list[str]) -> str:
    return hashlib.sha256(canonical_csv(df, columns)).hexdigest()[:16]


def write_canonical(df: pd.DataFrame, path: str | Path, columns: list[str]) -> str:
    """Write the canonical CSV and return its hash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canonical_csv(df, columns))
    return content_hash(df, columns)


def split_hash(df: pd.DataFrame) -> str:
    """Content hash of a split; it goes into every result row."""
    return content_hash(df, SPLIT_COLUMNS)


def save_split(df: pd.DataFrame, path: str | Path) -> str:
    """Write the split as CSV and return its hash."""
    return write_canonical(df, path, SPLIT_COLUMNS)


def read_canonical(path: str | Path, columns: list[str], *, what: str, dtype: object = str) -> pd.DataFrame:
    """Read a CSV written by :func:`write_canonical`, checking that it has ``columns``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} file not found: {path}")
    df = pd.read_csv(path, dtype=dtype, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def load_split(path: str | Path) -> pd.DataFrame:
    """Read a split CSV written by :func:`save_split`."""
    df = read_canonical(path, SPLIT_COLUMNS, what="split")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise DatasetError(f"{path}: unknown split value(s) {', '.join(bad)}; allowed: {', '.join(SPLITS)}")
    return df


def apply_split(table: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """Attach a stored split to a dataset table; every image of the table must be in the split."""
    merged = table.merge(split[["image_id", "split"]], on="image_id", how="left")
    unassigned = merged.loc[merged["split"].isna(), "image_id"].tolist()
    if unassigned:
        raise DatasetError(f"{len(unassigned)} image(s) are not in the stored split, e.g. {', '.join(unassigned[:5])}")
    return merged
