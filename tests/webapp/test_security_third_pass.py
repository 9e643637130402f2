"""Security regressions of the third pass (issue 21), item by item, against the production configuration where the
property depends on it (the fixtures of ``test_security``: gunicorn or the app in process with
``LESIONLITE_ENV=production``, Redis limits, one trusted proxy, SMTP on localhost)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.browser import free_port, wait_http
from tests.webapp.test_security import REPO, production_env

LOCK_HOLDER = """
import sys, time
from core.store.results import ResultsStore
store = ResultsStore(sys.argv[1])   # a sweep's writer: holds the store's file lock
print("locked", flush=True)
time.sleep(120)
"""


def _workers(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


# 3. A worker restarted while a sweep holds the store boots from the choice made at start-up ----------------------

def test_a_worker_restarted_while_a_sweep_holds_the_store_still_boots(tmp_path: Path, variant_folder: Path,
                                                                       sweep_store: Path, redis_url: str) -> None:
    db = tmp_path / "results.duckdb"
    db.write_bytes(sweep_store.read_bytes())
    port = free_port()
    env = {**os.environ, **production_env(tmp_path, variant_folder, RATELIMIT_STORAGE_URI=redis_url,
                                          LESIONLITE_EXTERNAL_URL=f"https://127.0.0.1:{port}",
                                          LESIONLITE_DB=str(db))}
    env.pop("LESIONLITE_VARIANT")  # the site chooses from the store, as the README's production set-up may
    log = tmp_path / "gunicorn.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                                   "webapp:create_app()"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    holder = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/auth/login", proc=server)
        deadline = time.monotonic() + 30
        while len(_workers(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        before = _workers(server.pid)
        holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db)], cwd=REPO, stdout=subprocess.PIPE,
                                  text=True)
        assert holder.stdout.readline().strip() == "locked"
        os.kill(before[0], signal.SIGKILL)  # a worker dies (a timeout, an out-of-memory kill) during the sweep
        booted = "has no out-of-distribution gate"  # what each worker logs once its app is made
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the replacement imports torch etc.: seconds on a busy machine
            text = log.read_text()
            if text.count(booted) >= 3 or "Worker failed to boot" in text:
                break
            time.sleep(0.5)
        assert "Worker failed to boot" not in text and text.count(booted) == 3, text[-2000:]
        assert server.poll() is None and len(_workers(server.pid)) == 2
        assert all(requests.get(f"{base}/auth/login", timeout=10).status_code == 200 for _ in range(6))
    finally:
        if holder is not None:
            holder.kill()
            holder.communicate()
        server.terminate()
        server.wait(timeout=30)


def test_a_fresh_start_with_the_store_locked_serves_the_last_choice_with_a_warning(
        tmp_path: Path, variant_folder: Path, sweep_store: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from webapp import create_app
    from webapp.predictor import DEPLOYED_CHOICE_FILE

    db = tmp_path / "results.duckdb"
    db.write_bytes(sweep_store.read_bytes())
    for key, value in production_env(tmp_path, variant_folder, RATELIMIT_STORAGE_URI=redis_url,
                                     LESIONLITE_DB=str(db)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LESIONLITE_VARIANT")
    chosen = create_app().config["DEPLOYED_VARIANT"]
    record = tmp_path / "instance" / DEPLOYED_CHOICE_FILE
    assert record.is_file() and oct(record.parent.stat().st_mode & 0o777) == "0o700"
    record.write_text(record.read_text().replace(f'"master_pid": {os.getppid()}', '"master_pid": 1'))  # a new server
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with caplog.at_level("WARNING"):
            assert create_app().config["DEPLOYED_VARIANT"] == chosen
        assert "serving the variant chosen at the last start" in caplog.text
    finally:
        holder.kill()
        holder.communicate()
