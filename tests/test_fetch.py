"""The HAM10000 fetcher against a local HTTP server that speaks the Dataverse API (no network)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.data.fetch import fetch_ham10000
from core.data.layout import load_table
from core.errors import DatasetError


def _fake_dataset(synthetic_root: Path) -> dict[str, bytes]:
    """Two image archives and the metadata CSV, built from the synthetic dataset."""
    files: dict[str, bytes] = {}
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for jpg in sorted((synthetic_root / part).glob("*.jpg")):
                zf.write(jpg, jpg.name)
        files[f"{part}.zip"] = buf.getvalue()
    files["HAM10000_metadata.csv"] = (synthetic_root / "HAM10000_metadata.csv").read_bytes()
    return files


class _Server:
    def __init__(self, files: dict[str, bytes], *, corrupt: str | None = None):
        self.files = files
        self.ids = {i + 100: name for i, name in enumerate(files)}
        self.corrupt = corrupt
        self.ranges: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/api/datasets/"):
                    return self._send(200, json.dumps(server.listing()).encode(), "application/json")
                if self.path.startswith("/api/access/datafile/"):
                    file_id = int(self.path.split("/")[-1].split("?")[0])
                    body = server.files[server.ids[file_id]]
                    if server.corrupt == server.ids[file_id]:
                        body = body[:-10] + b"x" * 10
                    rng = self.headers.get("Range")
                    if rng:
                        server.ranges.append(rng)
                        start = int(rng.split("=")[1].split("-")[0])
                        return self._send(206, body[start:], "application/octet-stream",
                                          {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
                    return self._send(200, body, "application/octet-stream")
                return self._send(404, b"not found", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def listing(self) -> dict:
        files = []
        for file_id, name in self.ids.items():
            body = self.files[name]
            entry = {"id": file_id, "filename": name, "filesize": len(body),
                     "checksum": {"type": "MD5", "value": hashlib.md5(body).hexdigest()}}
            if name.endswith(".csv"):  # Dataverse ingests CSVs as .tab and keeps the original
                entry.update(filename=name.replace(".csv", ".tab"), originalFileFormat="text/csv",
                             originalFileName=name, originalFileSize=len(body), filesize=len(body) + 7)
            files.append({"dataFile": entry})
        return {"status": "OK", "data": {"latestVersion": {"files": files}}}


@pytest.fixture
def server(synthetic_root: Path) -> Iterator[_Server]:
    srv = _Server(_fake_dataset(synthetic_root))
    thread = threading.Thread(target=srv.httpd.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def test_fetch_unpacks_to_readable_layout(server: _Server, synthetic_root: Path, tmp_path: Path) -> None:
    dest = fetch_ham10000(tmp_path / "ham", base_url=server.url)
    table = load_table(dest)
    assert len(table) == len(load_table(synthetic_root))
    assert {Path(p).parent.name for p in table["path"]} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    # Running again downloads nothing new (verified in place).
    fetch_ham10000(tmp_path / "ham", base_url=server.url)


def test_fetch_resumes_partial_download(server: _Server, tmp_path: Path) -> None:
    name = "HAM10000_images_part_1.zip"
    downloads = tmp_path / "ham" / "downloads"
    downloads.mkdir(parents=True)
    half = len(server.files[name]) // 2
    (downloads / f"{name}.part").write_bytes(server.files[name][:half])
    fetch_ham10000(tmp_path / "ham", base_url=server.url)
    assert f"bytes={half}-" in server.ranges
    assert (downloads / name).read_bytes() == server.files[name]


def test_fetch_detects_corruption(synthetic_root: Path, tmp_path: Path) -> None:
    srv = _Server(_fake_dataset(synthetic_root), corrupt="HAM10000_images_part_2.zip")
    thread = threading.Thread(target=srv.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(DatasetError, match="MD5 checksum mismatch"):
            fetch_ham10000(tmp_path / "ham", base_url=srv.url)
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


def test_fetch_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot reach"):
        fetch_ham10000(tmp_path / "ham", base_url="http://127.0.0.1:9")
