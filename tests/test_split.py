"""Lesion-grouped, stratified, seeded splits, persisted with a content hash."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.classes import CLASSES
from core.data.layout import load_table, read_ham_metadata
from core.data.split import apply_split, check_grouped, load_split, make_split, save_split, split_hash
from core.errors import DatasetError


def _assert_good_split(split: pd.DataFrame) -> None:
    per_lesion = split.groupby("lesion_id")["split"].nunique()
    assert per_lesion.max() == 1, "a lesion appears in two splits"
    shares = split["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.02)
    assert shares["val"] == pytest.approx(0.1, abs=0.02)
    assert shares["test"] == pytest.approx(0.1, abs=0.02)
    for s in ("train", "val", "test"):
        assert set(split.loc[split["split"] == s, "dx"]) == set(CLASSES), f"a class is missing from {s}"
    # stratified: each class's share in test is close to its share overall
    overall = split["dx"].value_counts(normalize=True)
    test = split.loc[split["split"] == "test", "dx"].value_counts(normalize=True)
    assert (test - overall).abs().max() < 0.03


def test_grouped_split_on_complete_real_metadata(full_metadata_csv: Path) -> None:
    split = make_split(read_ham_metadata(full_metadata_csv), seed=0)
    assert len(split) == 10015
    _assert_good_split(split)


def test_grouped_split_on_real_subset(real_subset_dir: Path) -> None:
    split = make_split(load_table(real_subset_dir), seed=0)
    _assert_good_split(split)


def test_split_is_seeded(full_metadata_csv: Path) -> None:
    meta = read_ham_metadata(full_metadata_csv)
    a, b, c = make_split(meta, seed=3), make_split(meta, seed=3), make_split(meta, seed=4)
    assert split_hash(a) == split_hash(b)
    assert split_hash(a) != split_hash(c)


def test_save_load_roundtrip_and_hash(synthetic_root: Path, tmp_path: Path) -> None:
    table = load_table(synthetic_root)
    split = make_split(table, seed=0)
    digest = save_split(split, tmp_path / "split.csv")
    loaded = load_split(tmp_path / "split.csv")
    assert split_hash(loaded) == digest
    merged = apply_split(table, loaded)
    assert (merged.set_index("image_id")["split"] == split.set_index("image_id")["split"]).all()
    moved = split.copy()
    moved.loc[moved.index[0], "split"] = "val" if moved.loc[moved.index[0], "split"] != "val" else "test"
    assert split_hash(moved) != digest


def test_check_grouped_detects_leak() -> None:
    leaky = pd.DataFrame({"image_id": ["a", "b"], "lesion_id": ["L", "L"], "dx": ["nv", "nv"],
                          "split": ["train", "test"]})
    with pytest.raises(DatasetError, match="more than one split"):
        check_grouped(leaky)


def test_too_few_lesions_is_a_clear_error() -> None:
    tiny = pd.DataFrame({"image_id": ["a", "b"], "lesion_id": ["L1", "L2"], "dx": ["nv", "mel"], "label": [1, 0]})
    with pytest.raises(DatasetError, match="too few lesions"):
        make_split(tiny)


def test_unknown_split_value(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("image_id,lesion_id,dx,split\na,L,nv,holdout\n")
    with pytest.raises(DatasetError, match="unknown split value"):
        load_split(tmp_path / "s.csv")
