"""Download HAM10000 from Harvard Dataverse (doi:10.7910/DVN/DBW86T): resumable, verified, unpacked.

The dataset's file list comes from the Dataverse API; each file is downloaded with HTTP Range requests
(an interrupted download resumes from its ``.part`` file), checked against the listed size and checksum,
and the image archives are unpacked into the HAM10000 layout this project reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core.data.layout import HAM_METADATA
from core.errors import DatasetError
from core.progress import progress

log = logging.getLogger(__name__)

DATAVERSE_URL = "https://dataverse.harvard.edu"
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
TRAINING_FILES = ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip", HAM_METADATA)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of the Dataverse listing, as it will be saved."""

    name: str
    url: str
    size: int | None
    checksum_type: str | None  # "MD5", "SHA-1", "SHA-256", ...
    checksum: str | None


def _open(url: str, *, headers: dict[str, str] | None = None, timeout: float = 60):
    request = urllib.request.Request(url, headers={"User-Agent": "lesionlite-fetch", **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # the URL comes from the user's base URL
    except urllib.error.HTTPError as exc:
        raise DatasetError(f"download failed: HTTP {exc.code} for {url}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DatasetError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def list_files(*, base_url: str = DATAVERSE_URL, doi: str = HAM10000_DOI) -> list[RemoteFile]:
    """The dataset's files from the Dataverse API (tabular files as their original CSV)."""
    api = f"{base_url.rstrip('/')}/api/datasets/:persistentId/?persistentId={urllib.parse.quote(doi, safe=':/')}"
    with _open(api) as response:
        try:
            listing = json.load(response)
            entries = listing["data"]["latestVersion"]["files"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DatasetError(f"unexpected answer from {api}: not a Dataverse dataset listing") from None
    files = []
    for entry in entries:
        df = entry["dataFile"]
        url = f"{base_url.rstrip('/')}/api/access/datafile/{df['id']}"
        checksum = df.get("checksum") or ({"type": "MD5", "value": df["md5"]} if "md5" in df else {})
        if df.get("originalFileFormat"):  # ingested tabular file: fetch the uploaded original, not the .tab
            name = df.get("originalFileName") or Path(df["filename"]).with_suffix(".csv").name
            files.append(RemoteFile(name, url + "?format=original", df.get("originalFileSize"),
                                    checksum.get("type"), checksum.get("value")))
        else:
            files.append(RemoteFile(df["filename"], url, df.get("filesize"), checksum.get("type"),
                                    checksum.get("value")))
    return files


def _verify(path: Path, remote: RemoteFile) -> None:
    if remote.size is not None and path.stat().st_size != remote.size:
        raise DatasetError(f"{remote.name}: size {path.stat().st_size} differs from the listed {remote.size}")
    if remote.checksum and remote.checksum_type:
        algo = remote.checksum_type.lower().replace("-", "")
        if algo not in hashlib.algorithms_available:
            log.warning("%s: cannot verify checksum type %s", remote.name, remote.checksum_type)
            return
        h = hashlib.new(algo)
        with path.open("rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
        if h.hexdigest() != remote.checksum.lower():
            raise DatasetError(f"{remote.name}: {remote.checksum_type} checksum mismatch (corrupt download); "
                               f"delete {path} and fetch again")


def download(remote: RemoteFile, dest_dir: Path) -> Path:
    """Download one file into ``dest_dir``, resuming a ``.part`` file; verified before it takes its name."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / remote.name
    if final.is_file():
        _verify(final, remote)
        log.info("%s: already downloaded and verified", remote.name)
        return final
    part = dest_dir / (remote.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if remote.size is not None and have > remote.size:
        part.unlink()
        have = 0
    if remote.size is None or have < remote.size:
        headers = {"Range": f"bytes={have}-"} if have else {}
        with _open(remote.url, headers=headers) as response:
            if have and response.status != 206:  # server ignored the range: start again
                log.info("%s: server does not resume; downloading from the start", remote.name)
                have = 0
            mode = "ab" if have else "wb"
            with part.open(mode) as f, progress(total=remote.size, initial=have, unit="B", unit_scale=True,
                                                desc=remote.name) as bar:
                while block := response.read(_CHUNK):
                    f.write(block)
                    bar.update(len(block))
    _verify(part, remote)
    os.replace(part, final)
    return final


def _safe_extract(archive: Path, target: Path) -> int:
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    count = 0
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            out = (target / member.filename).resolve()
            if not out.is_relative_to(root):
                raise DatasetError(f"{archive.name}: refusing to extract {member.filename!r} outside {target}")
            if member.is_dir():
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            count += 1
    return count


def fetch_ham10000(dest: str | Path, *, base_url: str = DATAVERSE_URL, doi: str = HAM10000_DOI,
                   names: tuple[str, ...] = TRAINING_FILES) -> Path:
    """Download, verify and unpack HAM10000 into ``dest`` (HAM10000 layout). Returns ``dest``."""
    dest = Path(dest)
    available = {f.name: f for f in list_files(base_url=base_url, doi=doi)}
    missing = [n for n in names if n not in available]
    if missing:
        raise DatasetError(f"not in the dataset listing: {', '.join(missing)}; "
                           f"available: {', '.join(sorted(available))}")
    downloads = dest / "downloads"
    for name in names:
        path = download(available[name], downloads)
        if path.suffix == ".zip":
            n = _safe_extract(path, dest / path.stem)
            log.info("unpacked %d files from %s", n, path.name)
        else:
            shutil.copyfile(path, dest / path.name)
    return dest
