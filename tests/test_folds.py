"""Cross-validation folds: lesion-disjoint, stratified, every non-test image out of fold exactly once."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.classes import CLASSES
from core.data.folds import (
    TEST_FOLD,
    all_labelled_split,
    apply_folds,
    check_folds,
    fold_split,
    folds_hash,
    load_folds,
    make_folds,
    save_folds,
)
from core.data.layout import load_table, read_ham_metadata
from core.data.split import make_split
from core.errors import DatasetError


def _assert_good_folds(folds: pd.DataFrame, k: int) -> None:
    pool = folds[folds["fold"] != TEST_FOLD]
    assert set(pool["fold"]) == set(range(k))
    assert (folds.loc[folds["split"] == "test", "fold"] == TEST_FOLD).all(), "a test image is in a fold"
    assert folds.groupby("lesion_id")["fold"].nunique().max() == 1, "a lesion spans two folds"
    # every non-test image is held out by exactly one fold's table, and trains the others
    held = pd.concat([fold_split(folds, i).query("split == 'val'") for i in range(k)])
    assert held["image_id"].is_unique and set(held["image_id"]) == set(pool["image_id"])
    for i in range(k):
        table = fold_split(folds, i)
        assert set(table.loc[table["split"] == "test", "image_id"]) == set(folds.loc[folds["split"] == "test",
                                                                                     "image_id"])
        assert not set(table.loc[table["split"] == "train", "lesion_id"]) & set(
            table.loc[table["split"] == "val", "lesion_id"])
    # stratified: each fold's class shares are close to the pool's
    overall = pool["dx"].value_counts(normalize=True)
    for i in range(k):
        shares = pool.loc[pool["fold"] == i, "dx"].value_counts(normalize=True).reindex(CLASSES, fill_value=0)
        assert (shares - overall.reindex(CLASSES)).abs().max() < 0.03


def test_folds_on_complete_real_metadata(full_metadata_csv: Path) -> None:
    folds = make_folds(make_split(read_ham_metadata(full_metadata_csv), seed=0), k=5, seed=0)
    assert len(folds) == 10015
    _assert_good_folds(folds, 5)


def test_folds_on_real_subset(real_subset_dir: Path) -> None:
    folds = make_folds(make_split(load_table(real_subset_dir), seed=0), k=5, seed=0)
    assert (folds["fold"] != TEST_FOLD).sum() == 7740  # the 8,601 images less the 861 of the fixed test split
    _assert_good_folds(folds, 5)


def test_folds_on_synthetic_data_save_load_and_hash(synthetic_root: Path, tmp_path: Path) -> None:
    table = make_split(load_table(synthetic_root), seed=0)
    folds = make_folds(table, k=3, seed=0)
    pool = folds[folds["fold"] != TEST_FOLD]
    assert pool.groupby("lesion_id")["fold"].nunique().max() == 1
    assert set(pool["fold"]) == {0, 1, 2}
    digest = save_folds(folds, tmp_path / "folds.csv")
    loaded = load_folds(tmp_path / "folds.csv")
    assert folds_hash(loaded) == digest
    again = apply_folds(load_table(synthetic_root), loaded)
    assert (again.set_index("image_id")["fold"] == folds.set_index("image_id")["fold"]).all()
    assert folds_hash(make_folds(table, k=3, seed=0)) == digest  # seeded
    assert folds_hash(make_folds(table, k=3, seed=1)) != digest
    everything = all_labelled_split(folds)
    assert set(everything["split"]) == {"train", "test"}
    assert (everything["split"] == "train").sum() == len(pool)


def test_fold_errors_are_clear() -> None:
    table = pd.DataFrame({"image_id": ["a", "b", "c"], "lesion_id": ["L1", "L1", "L2"], "dx": ["nv"] * 3,
                          "label": [1] * 3, "split": ["train"] * 3})
    with pytest.raises(DatasetError, match="at least 2 folds"):
        make_folds(table, k=1)
    with pytest.raises(DatasetError, match="too few lesions"):
        make_folds(table, k=3)
    leaky = table.assign(fold=[0, 1, 1])
    with pytest.raises(DatasetError, match="more than one fold"):
        check_folds(leaky, 2)
    with pytest.raises(DatasetError, match="no fold"):
        apply_folds(table.assign(extra=1), table.assign(fold=0).iloc[:2])
