"""From a dataset folder to decoded, validated images ready for a model's preprocessing, split for a run."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from core.data.cache import ImageCache, build_cache
from core.data.dataset import CachedImageDataset
from core.data.layout import dataset_fingerprint, load_table
from core.data.split import split_hash
from core.data.transforms import Preprocessing, eval_array
from core.errors import DatasetError

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """A dataset's label table (unreadable images removed, if skipped), its image cache and fingerprint."""

    root: Path
    table: pd.DataFrame
    cache: ImageCache
    fingerprint: str


def prepare_data(root: str | Path, *, prep: Preprocessing, cache_dir: str | Path, skip_bad: bool = False,
                 workers: int = 2) -> PreparedData:
    """Read and validate a dataset folder and decode its images at the model's cache resolution."""
    table = load_table(root)
    cache = build_cache(table, size=prep.cache_size, cache_dir=cache_dir, interpolation=prep.interpolation,
                        skip_bad=skip_bad, workers=workers)
    if cache.bad:
        table = table[~table["image_id"].isin(list(cache.bad))].reset_index(drop=True)
        if table.empty:
            raise DatasetError(f"no readable images left in {root}")
    return PreparedData(Path(root), table, cache, dataset_fingerprint(table))


def eval_loader(data: PreparedData, table: pd.DataFrame, prep: Preprocessing, *, batch_size: int,
                workers: int = 0) -> DataLoader:
    """A deterministic loader (no augmentation, fixed order) over ``table``'s rows."""
    dataset = CachedImageDataset(data.cache, table, functools.partial(eval_array, prep=prep))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


@dataclass
class PreparedSplit:
    """What a job works on: the prepared dataset, its rows with their split, and the model's preprocessing."""

    data: PreparedData
    table: pd.DataFrame  # data.table's rows with a "split" column (train / val / test)
    prep: Preprocessing

    def __post_init__(self) -> None:
        self.hash = split_hash(self.table)

    def rows(self, split: str) -> pd.DataFrame:
        return self.table[self.table["split"] == split]

    def labels(self, split: str):
        return self.rows(split)["label"].to_numpy()

    def loader(self, split: str, *, batch_size: int, rows: pd.DataFrame | None = None) -> DataLoader:
        """A deterministic evaluation loader over ``split`` (or the given subset of its rows)."""
        return eval_loader(self.data, self.rows(split) if rows is None else rows, self.prep, batch_size=batch_size)

    def arrays(self, split: str, n: int | None = None, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed images (N, 3, H, W) and labels of ``split``, or of ``n`` of its rows drawn with ``seed``."""
        rows = self.rows(split)
        if n and n < len(rows):
            rows = rows.sample(n=n, random_state=seed)
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in self.loader(split, batch_size=64, rows=rows)], strict=True)
        return np.concatenate(xs), np.concatenate(ys)

    def dataset(self, split: str, transform) -> CachedImageDataset:
        return CachedImageDataset(self.data.cache, self.rows(split), transform)
