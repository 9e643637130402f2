"""Web app load benchmark: gunicorn on localhost, concurrent API clients posting real sample images.

    python -m scripts.bench_webapp --variant <variant folder> [--clients 8] [--requests 50] [--workers 2]

Prints throughput, p50 / p95 latency and the error count, with the in-process model call on the same images
(no HTTP, no auth, no storage) measured side by side in the same run as the baseline.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from core.imaging import check_image
from core.live import predict_checked
from core.variants import load_predictor

DEFAULT_SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ham10000-samples"


def _multipart(data: bytes, boundary: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


def _post(url: str, token: str, data: bytes) -> tuple[float, int]:
    boundary = secrets.token_hex(8)
    req = urllib.request.Request(url, data=_multipart(data, boundary), method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - localhost only
            r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0
    return (time.perf_counter() - start) * 1e3, status


def _prepare_instance(instance: Path, variant: str, env: dict[str, str]) -> str:
    """Create a verified user with an API token in the instance's database; returns the token."""
    code = ("import os\nfrom webapp import create_app, users\nfrom webapp.db import get_db\n"
            "from webapp.security import new_api_token\napp = create_app()\nwith app.app_context():\n"
            "    u = users.create('bench@example.org', 'a long benchmark passphrase')\n"
            "    users.update(u.id, verified=1)\n    tok, digest = new_api_token()\n    db = get_db()\n"
            "    with db:\n        db.execute('INSERT INTO api_tokens (user_id, token_hash, hint) VALUES (?, ?, ?)',"
            " (u.id, digest, tok[-4:]))\n    print(tok)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark the web app's prediction API", add_help=add_help)
    parser.add_argument("--variant", required=True, help="deployable variant folder to serve")
    parser.add_argument("--samples", default=str(DEFAULT_SAMPLES), help="folder of sample JPEGs")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--port", type=int, default=8765)
    return parser


def main(args: argparse.Namespace) -> int:
    images = [p.read_bytes() for p in sorted(Path(args.samples).glob("*.jpg"))]
    if not images:
        print(f"error: no sample JPEGs in {args.samples}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LESIONLITE_ENV": "production", "SECRET_KEY": secrets.token_hex(32),
               "LESIONLITE_INSTANCE": tmp, "LESIONLITE_VARIANT": args.variant, "SESSION_COOKIE_SECURE": "false",
               "LESIONLITE_RATELIMIT_API": "100000 per minute"}
        token = _prepare_instance(Path(tmp), args.variant, env)
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", str(args.workers), "--threads", "1",
                                   "-b", f"127.0.0.1:{args.port}", "--timeout", "120", "webapp:create_app()"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{args.port}/api/v1/predict"
        try:
            deadline = time.monotonic() + 60
            while _post(url, token, images[0])[1] != 200:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("error: gunicorn did not start", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            for i in range(args.workers * 2):  # warm every worker's model
                _post(url, token, images[i % len(images)])
            jobs = [images[i % len(images)] for i in range(args.clients * args.requests)]
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                results = list(pool.map(lambda d: _post(url, token, d), jobs))
            wall = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(timeout=30)
    latencies = np.array([ms for ms, _ in results])
    errors = sum(status != 200 for _, status in results)
    predictor = load_predictor(args.variant, threads=1)
    checked = [check_image(d) for d in images]
    direct = [predict_checked(predictor, c, name="").latency_ms for c in checked for _ in range(3)]
    print(f"web app benchmark: {args.variant}\n{args.clients} clients x {args.requests} requests, gunicorn "
          f"{args.workers} workers, {os.cpu_count()} CPUs, {len(images)} distinct sample images")
    print(f"{'measure':<34} {'value':>10}")
    print(f"{'throughput (requests/s)':<34} {len(results) / wall:10.1f}")
    print(f"{'HTTP latency p50 (ms)':<34} {np.percentile(latencies, 50):10.1f}")
    print(f"{'HTTP latency p95 (ms)':<34} {np.percentile(latencies, 95):10.1f}")
    print(f"{'errors':<34} {errors:10d}")
    print(f"{'baseline: model call in-process (ms)':<34} {statistics.median(direct):10.1f}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
