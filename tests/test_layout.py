"""Reading and validating the HAM10000 and ISIC 2018 Task 3 layouts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.classes import CLASSES, ISIC_COLUMNS
from core.data.layout import HAM_METADATA, dataset_fingerprint, load_table, read_ham_metadata, read_isic_ground_truth
from core.errors import DatasetError


def test_reads_complete_real_metadata(full_metadata_csv: Path) -> None:
    df = read_ham_metadata(full_metadata_csv)
    assert len(df) == 10015
    assert df["lesion_id"].nunique() == 7470
    assert df["dx"].value_counts().to_dict() == {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327,
                                                 "vasc": 142, "df": 115}
    assert df["age"].isna().sum() == 57  # empty ages are missing values, not errors
    assert (df["sex"] == "unknown").any()
    assert (df["label"] == df["dx"].map(CLASSES.index)).all()


def test_reads_real_subset_with_images(real_subset_dir: Path) -> None:
    df = load_table(real_subset_dir)
    assert len(df) == 8601 and df["lesion_id"].nunique() == 6412
    assert all(Path(p).is_file() for p in df["path"].head(20))
    assert df.attrs["layout"] == "ham"


def test_reads_synthetic_layout_in_two_parts(synthetic_root: Path) -> None:
    df = load_table(synthetic_root)
    parents = {Path(p).parent.name for p in df["path"]}
    assert parents == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert len(dataset_fingerprint(df)) == 16


def _write_meta(tmp_path: Path, text: str) -> Path:
    path = tmp_path / HAM_METADATA
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lesion_id,image_id,dx_type\nL1,I1,histo\n", "missing column(s) dx"),
        ("lesion_id,image_id,dx\nL1,I1,melanoma\n", "unknown dx label(s) 'melanoma'; allowed: mel, nv"),
        ("lesion_id,image_id,dx\nL1,I1,mel\nL2,I1,nv\n", "duplicate image_id(s) I1"),
        ("lesion_id,image_id,dx\n", "the dataset is empty"),
        ("", "metadata file is empty"),
        ("lesion_id,image_id,dx\nL1,I1,mel\nL1,I2,nv\n", "lesion(s) with more than one dx: L1"),
        ("lesion_id,image_id,dx\nL1,,mel\n", "empty image_id or lesion_id"),
    ],
)
def test_bad_metadata_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=None) as err:
        read_ham_metadata(_write_meta(tmp_path, text))
    assert message in str(err.value)


def test_missing_folder_and_table(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data folder not found"):
        load_table(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no label table found"):
        load_table(tmp_path)


def test_listed_images_missing_are_listed(synthetic_copy: Path) -> None:
    victims = sorted(synthetic_copy.rglob("*.jpg"))[:2]
    for v in victims:
        v.unlink()
    with pytest.raises(DatasetError) as err:
        load_table(synthetic_copy)
    assert "2 image(s) listed" in str(err.value)
    assert all(v.stem in str(err.value) for v in victims)


def test_isic_ground_truth_layout(synthetic_copy: Path) -> None:
    ham = read_ham_metadata(synthetic_copy / HAM_METADATA)
    (synthetic_copy / HAM_METADATA).unlink()
    onehot = pd.get_dummies(ham["dx"]).reindex(columns=list(CLASSES), fill_value=False).astype(float)
    onehot.columns = list(ISIC_COLUMNS)
    onehot.insert(0, "image", ham["image_id"])
    onehot.to_csv(synthetic_copy / "ISIC2018_Task3_Training_GroundTruth.csv", index=False)
    df = load_table(synthetic_copy)
    assert df.attrs["layout"] == "isic"
    assert (df["dx"].to_numpy() == ham["dx"].to_numpy()).all()
    assert (df["lesion_id"] == df["image_id"]).all()  # no lesion ids in ISIC files: each image its own group


def test_isic_ground_truth_not_one_hot(tmp_path: Path) -> None:
    path = tmp_path / "gt.csv"
    path.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_1,1,1,0,0,0,0,0\n")
    with pytest.raises(DatasetError, match="not one-hot: ISIC_1"):
        read_isic_ground_truth(path)
