"""A decoded-image cache: every image as uint8 at the cache resolution, in one memory-mapped ``.npy``.

An epoch then never re-decodes a JPEG. The cache key covers each source file's path, size and mtime and
the target size/interpolation, so a changed source or resolution builds a new cache. Building the cache is
also where unreadable or truncated images are found: they are listed in the error (or skipped, counted and
logged with ``skip_bad``), never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from core.data.transforms import decode_square
from core.errors import DatasetError
from core.progress import progress

log = logging.getLogger(__name__)

_CACHE_FORMAT = 1
DEFAULT_CACHE_DIR = Path("results/cache")
_DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class ImageCache:
    """Decoded images, one row per ``image_ids`` entry; ``bad`` maps skipped image ids to the reason."""

    path: Path
    array: np.ndarray
    image_ids: list[str]
    bad: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row = {image_id: i for i, image_id in enumerate(self.image_ids)}

    def rows(self, image_ids: list[str] | pd.Series) -> np.ndarray:
        return np.fromiter((self.row[i] for i in image_ids), dtype=np.int64, count=len(image_ids))


def cache_key(table: pd.DataFrame, *, size: int, interpolation: str) -> str:
    h = hashlib.sha256(f"v{_CACHE_FORMAT}|{size}|{interpolation}\n".encode())
    for image_id, path in sorted(zip(table["image_id"], table["path"], strict=True)):
        st = os.stat(path)
        h.update(f"{image_id}|{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _decode(path: str, size: int, interpolation: str) -> np.ndarray | str:
    try:
        return decode_square(path, size=size, interpolation=interpolation)
    except _DECODE_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"


def build_cache(
    table: pd.DataFrame,
    *,
    size: int,
    cache_dir: str | Path,
    interpolation: str = "bicubic",
    skip_bad: bool = False,
    workers: int = 2,
) -> ImageCache:
    """Return the cache for ``table``'s images at ``size`` pixels, decoding only if no valid cache exists.

    Raises:
        DatasetError: some images could not be decoded and ``skip_bad`` is off (the message lists them).
    """
    cache_dir = Path(cache_dir)
    key = cache_key(table, size=size, interpolation=interpolation)
    npy, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if meta_path.is_file() and npy.is_file():
        meta = json.loads(meta_path.read_text())
        cache = ImageCache(npy, np.load(npy, mmap_mode="r"), meta["image_ids"], meta["bad"])
        log.info("image cache hit: %s (%d images at %d px)", npy, len(cache.image_ids), size)
    else:
        cache = _write_cache(table, npy=npy, meta_path=meta_path, size=size, interpolation=interpolation,
                             workers=workers)
    if cache.bad:
        listed = "; ".join(f"{i} ({cache.bad[i]})" for i in list(cache.bad)[:5])
        more = f" and {len(cache.bad) - 5} more" if len(cache.bad) > 5 else ""
        if not skip_bad:
            raise DatasetError(f"{len(cache.bad)} unreadable image(s): {listed}{more}; "
                               "fix or remove them, or pass --skip-bad")
        log.warning("skipping %d unreadable image(s) (--skip-bad): %s%s", len(cache.bad), listed, more)
    return cache


def _write_cache(table: pd.DataFrame, *, npy: Path, meta_path: Path, size: int, interpolation: str,
                 workers: int) -> ImageCache:
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_suffix(f".tmp{os.getpid()}.npy")
    paths, ids = table["path"].tolist(), table["image_id"].tolist()
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(ids), size, size, 3))
    bad: dict[str, str] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL releases the GIL while decoding
            results = pool.map(lambda p: _decode(p, size, interpolation), paths, chunksize=16)
            for i, res in enumerate(progress(results, total=len(ids), desc=f"decode {size}px", unit="img")):
                if isinstance(res, str):
                    bad[ids[i]] = res
                else:
                    out[i] = res
        out.flush()
        del out
        os.replace(tmp, npy)
    finally:
        tmp.unlink(missing_ok=True)
    meta_path.write_text(json.dumps({"image_ids": ids, "bad": bad, "size": size, "interpolation": interpolation}))
    log.info("image cache written: %s (%d images at %d px)", npy, len(ids), size)
    return ImageCache(npy, np.load(npy, mmap_mode="r"), ids, bad)
