"""Reading a dataset folder in the HAM10000 or the ISIC 2018 Task 3 layout.

HAM10000: ``HAM10000_metadata.csv`` (lesion_id, image_id, dx, dx_type, age, sex, localization) and the
JPEGs anywhere below the root (``HAM10000_images_part_1/``, ``part_2/`` or flat).
ISIC 2018 Task 3: a ground-truth CSV ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` (one-hot) and the images below
the root. ISIC files carry no lesion id, so each image counts as its own lesion.

The result is a :class:`pandas.DataFrame` with columns ``image_id, lesion_id, dx, label`` (and ``path`` once
images are resolved), validated with errors that name the problem.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd

from core.classes import CLASS_TO_INDEX, CLASSES, ISIC_COLUMNS
from core.errors import DatasetError

log = logging.getLogger(__name__)

HAM_METADATA = "HAM10000_metadata.csv"
REQUIRED_HAM_COLUMNS = ("lesion_id", "image_id", "dx")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_MAX_LISTED = 10


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def read_ham_metadata(csv_path: str | Path) -> pd.DataFrame:
    """Read and validate a HAM10000 metadata CSV.

    Raises:
        DatasetError: missing file or columns, empty table, unknown dx labels, duplicate image ids, or a lesion
            labelled with two different diagnoses.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"metadata file not found: {csv_path}")
    try:
        df = pd.read_csv(csv_path, dtype={"lesion_id": str, "image_id": str, "dx": str}, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"metadata file is empty: {csv_path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"metadata file is not a readable CSV: {csv_path} ({exc})") from None
    missing = [c for c in REQUIRED_HAM_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(
            f"{csv_path.name}: missing column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_HAM_COLUMNS)} (found: {', '.join(map(str, df.columns))})"
        )
    if "age" in df.columns:
        df["age"] = pd.to_numeric(df["age"].replace("", None), errors="coerce")
    return _validate_labels(df, source=csv_path.name)


def read_isic_ground_truth(csv_path: str | Path) -> pd.DataFrame:
    """Read an ISIC 2018 Task 3 ground-truth CSV (``image`` + one-hot class columns)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"ground-truth file not found: {csv_path}")
    try:
        raw = pd.read_csv(csv_path, dtype={"image": str})
    except pd.errors.EmptyDataError:
        raise DatasetError(f"ground-truth file is empty: {csv_path}") from None
    missing = [c for c in ("image", *ISIC_COLUMNS) if c not in raw.columns]
    if missing:
        raise DatasetError(
            f"{csv_path.name}: missing column(s) {', '.join(missing)}; "
            f"an ISIC 2018 Task 3 file has: image,{','.join(ISIC_COLUMNS)}"
        )
    onehot = raw[list(ISIC_COLUMNS)].to_numpy()
    bad = raw.loc[(onehot.sum(axis=1) != 1) | ~((onehot == 0) | (onehot == 1)).all(axis=1), "image"].tolist()
    if bad:
        raise DatasetError(f"{csv_path.name}: rows that are not one-hot: {_listing(bad)}")
    df = pd.DataFrame({
        "image_id": raw["image"],
        "lesion_id": raw["image"],
        "dx": [CLASSES[i] for i in onehot.argmax(axis=1)],
    })
    return _validate_labels(df, source=csv_path.name)


def _validate_labels(df: pd.DataFrame, *, source: str) -> pd.DataFrame:
    if df.empty:
        raise DatasetError(f"{source}: the dataset is empty (no rows)")
    df = df.copy()
    df["dx"] = df["dx"].str.strip().str.lower()
    unknown = sorted(set(df["dx"]) - set(CLASSES))
    if unknown:
        raise DatasetError(f"{source}: unknown dx label(s) {', '.join(map(repr, unknown))}; "
                           f"allowed: {', '.join(CLASSES)}")
    dup = df.loc[df["image_id"].duplicated(), "image_id"].unique().tolist()
    if dup:
        raise DatasetError(f"{source}: duplicate image_id(s) {_listing(dup)}")
    empty_ids = df.index[(df["image_id"] == "") | (df["lesion_id"] == "")].tolist()
    if empty_ids:
        rows = _listing([str(i + 1) for i in empty_ids])
        raise DatasetError(f"{source}: empty image_id or lesion_id on data row(s) {rows}")
    per_lesion = df.groupby("lesion_id")["dx"].nunique()
    mixed = per_lesion[per_lesion > 1].index.tolist()
    if mixed:
        raise DatasetError(f"{source}: lesion(s) with more than one dx: {_listing(mixed)}")
    df["label"] = df["dx"].map(CLASS_TO_INDEX).astype("int64")
    return df.reset_index(drop=True)


def find_table(root: Path) -> tuple[Path, str]:
    """Locate the label table below ``root``; returns (path, layout) with layout ``"ham"`` or ``"isic"``."""
    ham = sorted(root.rglob(HAM_METADATA))
    if ham:
        return ham[0], "ham"
    for csv in sorted(root.rglob("*.csv")):
        try:
            header = pd.read_csv(csv, nrows=0).columns
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue
        if "image" in header and set(ISIC_COLUMNS) <= set(header):
            return csv, "isic"
    raise DatasetError(
        f"no label table found below {root}: expected {HAM_METADATA} (HAM10000 layout) "
        f"or a CSV with columns image,{','.join(ISIC_COLUMNS)} (ISIC 2018 Task 3 layout)"
    )


def index_images(root: Path) -> dict[str, Path]:
    """Map image id (file stem) to path for every image below ``root``."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.setdefault(path.stem, path)
    return found


def load_table(root: str | Path) -> pd.DataFrame:
    """Read the label table of a dataset folder and attach each image's path.

    Raises:
        DatasetError: folder or table missing, invalid labels, or listed images not on disk.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}")
    table_path, layout = find_table(root)
    df = read_ham_metadata(table_path) if layout == "ham" else read_isic_ground_truth(table_path)
    images = index_images(root)
    missing = [i for i in df["image_id"] if i not in images]
    if missing:
        raise DatasetError(f"{len(missing)} image(s) listed in {table_path.name} but not found below {root}: "
                           f"{_listing(missing)}")
    df["path"] = [str(images[i]) for i in df["image_id"]]
    df.attrs["layout"] = layout
    df.attrs["table"] = str(table_path)
    log.info("read %d images of %d lesions from %s (%s layout)", len(df), df["lesion_id"].nunique(), root, layout)
    return df


def dataset_fingerprint(df: pd.DataFrame) -> str:
    """Content fingerprint of a dataset: image ids, labels and image file sizes (stable across copies and layouts).

    Lesion ids are left out so the same images scored from the HAM10000 and the ISIC layout match; the split
    hash records the grouping.
    """
    h = hashlib.sha256()
    for row in df.sort_values("image_id").itertuples(index=False):
        size = Path(row.path).stat().st_size if "path" in df.columns else 0
        h.update(f"{row.image_id},{row.dx},{size}\n".encode())
    return h.hexdigest()[:16]
