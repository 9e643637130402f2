"""Web app benchmark: gunicorn on localhost in the production configuration (Redis limit store, https external
URL), concurrent API clients posting real sample images, then registration timing for known vs new addresses.

    python -m scripts.bench_webapp --variant <variant folder> [--clients 8] [--requests 50] [--workers 2]
    python -m scripts.bench_webapp --variant <variant folder> --api-limit "100000 per minute"   # raised, labelled

Prints throughput, p50 / p95 latency and the status counts (429 = rate-limited, 422 = refused by the model's
lesion-photo gate), with the in-process model call on the same images (no HTTP, no auth, no storage) measured side
by side as the baseline; the API limit in force is printed with them. All clients come from one address, like a
clinic behind one NAT.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.cookiejar
import io
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from core.cli import run_cli, script_parser
from core.serve.deployed import DeployedModel
from core.serve.imaging import check_image, reencode_jpeg
from core.serve.ood import GATE_FILE
from core.serve.predict import load_predictor, predict_image
from core.timing import StageTimer

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
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0
    return (time.perf_counter() - start) * 1e3, status


BENCH_PASSWORD = "velvet quasar tundra lantern"  # passes the site's password check


def _jpeg_segments(data: bytes) -> list[bytes]:
    """A JPEG's marker segments after SOI, each scan with its entropy-coded data, EOI last."""
    i, out = 2, []
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            out.append(data[i:i + 2])
            break
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # entropy-coded data runs to the next marker other than a stuffed 0xFF or a restart
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0x00 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append(data[i:end])
        i = end
    return out


def scan_bomb_jpeg(scans: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A progressive JPEG whose last scan is repeated to ``scans`` scans in all: a small file, a costly decode."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size, 120).save(buf, format="JPEG", progressive=True)
    segments = _jpeg_segments(buf.getvalue())
    sos = [seg for seg in segments if seg[1] == 0xDA]
    return b"\xff\xd8" + b"".join(segments[:-1]) + sos[-1] * (scans - len(sos)) + b"\xff\xd9"


def bad_uploads() -> dict[str, bytes]:
    """Uploads that cost a careless server dearly: decode work, not file size, is what they attack."""
    from PIL import Image

    strip, png = io.BytesIO(), io.BytesIO()
    Image.new("L", (65000, 769), 120).save(strip, format="JPEG", progressive=True)
    Image.new("L", (6000, 6600), 0).save(png, format="PNG", optimize=True)
    return {"progressive JPEG, 2000 scans": scan_bomb_jpeg(2000, (7000, 7000)),
            "progressive JPEG 65000x769": strip.getvalue(), "PNG 6000x6600 (flat)": png.getvalue(),
            **padded_uploads()}


def padded_uploads() -> dict[str, bytes]:
    """~10 MB files whose headers Pillow reads one marker or chunk at a time (issue 33): fill bytes, empty APP5
    markers, empty PNG chunks before the image data, around a small real picture."""
    import struct
    import zlib

    from PIL import Image

    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (300, 225), (170, 110, 80)).save(jpeg, format="JPEG")
    Image.new("RGB", (300, 225), (170, 110, 80)).save(png, format="PNG")
    j, p = jpeg.getvalue(), png.getvalue()
    chunk = struct.pack(">I", 0) + b"tEXt" + struct.pack(">I", zlib.crc32(b"tEXt"))
    return {"JPEG + 9.9 M fill bytes": j[:2] + b"\xff" * 9_900_000 + j[2:],
            "JPEG + 2.4 M empty APP5 markers": j[:2] + b"\xff\xe5\x00\x02" * 2_400_000 + j[2:],
            "PNG + 820 k empty chunks": p[:33] + chunk * 820_000 + p[33:]}


def _worker_pids(server_pid: int) -> list[int]:
    try:
        with open(f"/proc/{server_pid}/task/{server_pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _cpu_and_rss(pids: list[int]) -> tuple[float, float]:
    """CPU seconds used so far and resident MB now, summed over ``pids`` (Linux /proc)."""
    ticks, rss = 0, 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK"), rss / 1e6


def _bad_upload_times(base: str, token: str, files: dict[str, bytes], repeats: int, *, server_pid: int
                      ) -> tuple[dict[str, list[tuple[float, int]]], list[float], dict[str, tuple[float, float]]]:
    """Each bad file posted ``repeats`` times, two at once, while an anonymous visitor loads the login page; also
    the workers' CPU seconds per request and their resident-memory growth for each file."""
    stop, page_times = False, []

    def visitor() -> None:
        while not stop:
            start = time.perf_counter()
            with contextlib.suppress(OSError):  # a refused or timed-out load is timed all the same
                urllib.request.urlopen(f"{base}/auth/login", timeout=60).read()
            page_times.append((time.perf_counter() - start) * 1e3)
            time.sleep(0.05)

    results, cost = {}, {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        watcher = pool.submit(visitor)
        for name, data in files.items():
            pids = _worker_pids(server_pid)
            cpu0, rss0 = _cpu_and_rss(pids)
            results[name] = list(pool.map(lambda d: _post(f"{base}/api/v1/predict", token, d), [data] * repeats))
            cpu1, rss1 = _cpu_and_rss(pids)
            cost[name] = ((cpu1 - cpu0) / repeats, rss1 - rss0)  # the visitor's page loads are in it too
        stop = True
        watcher.result()
    return results, page_times, cost


def _prepare_instance(env: dict[str, str]) -> str:
    """A verified account with an API token, made through the web app's own CLI; returns the token."""
    out = subprocess.run([sys.executable, "-m", "flask", "--app", "webapp:create_app()", "create-user",
                          "--email", "bench@example.org", "--password", BENCH_PASSWORD, "--verified", "--api-token"],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis() -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("error: redis-server not found (apt-get install redis-server) and no --redis URL given; "
                         "several production workers need a shared rate-limit store")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise SystemExit("error: redis-server did not start")


def _registration_times(base: str, tries: int) -> tuple[list[float], list[float]]:
    """Interleaved registrations with a known and with a new address: the response times (ms) of each."""
    known, new = [], []
    for i in range(tries):
        for email, times in (("bench@example.org", known), (f"new{i}-{secrets.token_hex(3)}@example.org", new)):
            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            page = opener.open(f"{base}/auth/register", timeout=30).read().decode()
            token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
            body = urllib.parse.urlencode({"email": email, "password": BENCH_PASSWORD, "consent": "y",
                                           "csrf_token": token}).encode()
            req = urllib.request.Request(f"{base}/auth/register", data=body, method="POST",
                                         headers={"Referer": f"{base}/auth/register"})
            start = time.perf_counter()
            opener.open(req, timeout=30).read()
            times.append((time.perf_counter() - start) * 1e3)
    return known, new


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Benchmark the web app's prediction API", add_help=add_help)
    parser.add_argument("--variant", required=True, help="deployable variant folder to serve")
    parser.add_argument("--samples", default=str(DEFAULT_SAMPLES), help="folder of sample JPEGs")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-limit", help="raise (or set) the API rate limit for this run, e.g. "
                                            "'100000 per minute'; the printed figures say so (default: the site's)")
    parser.add_argument("--redis", help="Redis URL for the shared limit store (default: start a private redis-server)")
    parser.add_argument("--auth-tries", type=int, default=30, help="interleaved known/new registrations to time")
    parser.add_argument("--bad-repeats", type=int, default=4, help="posts of each costly bad upload (0: skip)")
    return parser


def _production_env(args: argparse.Namespace, *, instance: str, redis_url: str) -> dict[str, str]:
    """The site's production settings; plain HTTP on loopback stands in for the TLS proxy (one proxy, it says
    https)."""
    env = {**os.environ, "LESIONLITE_ENV": "production", "SECRET_KEY": secrets.token_hex(32),
           "LESIONLITE_INSTANCE": instance, "LESIONLITE_VARIANT": args.variant,
           "LESIONLITE_EXTERNAL_URL": f"https://127.0.0.1:{args.port}", "RATELIMIT_STORAGE_URI": redis_url,
           "SESSION_COOKIE_SECURE": "false", "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": "1",
           # The timing phase registers 2 x auth-tries times from one address: its limit is raised.
           "LESIONLITE_RATELIMIT_REGISTER": "100000 per minute"}
    if args.api_limit:
        env["LESIONLITE_RATELIMIT_API"] = args.api_limit
    if not (Path(args.variant) / GATE_FILE).is_file():  # a model without its photo check: said, never silent
        print(f"note: {args.variant} has no photo check; served with LESIONLITE_ALLOW_NO_PHOTO_CHECK=1")
        env["LESIONLITE_ALLOW_NO_PHOTO_CHECK"] = "1"
    return env


@dataclass
class _Measured:
    results: list[tuple[float, int]]  # (ms, HTTP status) of every prediction request
    wall: float  # seconds for all of them
    known: list[float]  # registration times, address already registered / new
    new: list[float]
    bad: dict[str, list[tuple[float, int]]]  # bad upload -> (ms, status) of each try
    page_times: list[float]  # the login page's load times while the bad uploads ran
    bad_cost: dict[str, tuple[float, float]]  # bad upload -> (worker CPU s per request, worker RSS growth MB)


def _measure(args: argparse.Namespace, images: list[bytes], *, base: str, token: str, redis_url: str,
             server_pid: int) -> _Measured:
    url = f"{base}/api/v1/predict"
    for i in range(args.workers * 2):  # warm every worker's model
        _post(url, token, images[i % len(images)])
    redis.Redis.from_url(redis_url).flushdb()  # the measured phase starts with fresh rate-limit counters
    jobs = [images[i % len(images)] for i in range(args.clients * args.requests)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        results = list(pool.map(lambda d: _post(url, token, d), jobs))
    wall = time.perf_counter() - start
    known, new = _registration_times(base, args.auth_tries) if args.auth_tries else ([], [])
    redis.Redis.from_url(redis_url).flushdb()
    bad, page_times, cost = (_bad_upload_times(base, token, bad_uploads(), args.bad_repeats, server_pid=server_pid)
                             if args.bad_repeats else ({}, [], {}))
    return _Measured(results, wall, known, new, bad, page_times, cost)


def stage_breakdown(variant: str, images: list[bytes], *, rounds: int = 3) -> dict[str, list[float]]:
    """Where one upload's time goes, in-process and one image at a time (a worker's view, 1 thread): decode and
    checks, the shared resize, gate, model, photo quality, and storage (re-encode + write + fsync); ``gate, own
    resize`` is the gate as it ran before the resize was shared (measured beside it, same images)."""
    model = DeployedModel.load(variant, threads=1)
    stages: dict[str, list[float]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds * len(images)):
            timer = StageTimer()
            with timer("decode + checks"):
                image = check_image(images[i % len(images)]).image
            answer = model.classify(image)
            if model.gate is not None:
                with timer("gate, own resize (before)"):
                    model.gate.check(image)
            with timer("storage"):
                path = Path(tmp) / f"{i}.jpg"
                with open(path, "wb") as f:
                    f.write(reencode_jpeg(image))
                    os.fsync(f.fileno())
            if i >= len(images):  # the first round warms the sessions and caches
                for stage, ms in {**timer.ms, **answer.stage_ms}.items():
                    stages[stage].append(ms)
    return stages


def _print_report(args: argparse.Namespace, m: _Measured, *, images: list[bytes], limit_label: str) -> None:
    ok = np.array([ms for ms, status in m.results if status == 200])
    statuses = collections.Counter(status for _, status in m.results)
    predictor = load_predictor(args.variant, threads=1)
    direct = [predict_image(predictor, check_image(d).image, name="").latency_ms for d in images for _ in range(3)]
    print(f"web app benchmark: {args.variant}\n{args.clients} clients x {args.requests} requests from one address, "
          f"gunicorn {args.workers} workers (production config, Redis limit store), {os.cpu_count()} CPUs, "
          f"{len(images)} distinct sample images\nAPI rate limit: {limit_label}")
    print(f"{'measure':<40} {'value':>10}")
    print(f"{'requests answered 200':<40} {statuses.get(200, 0):10d}")
    print(f"{'requests refused 429 (rate limit)':<40} {statuses.get(429, 0):10d}")
    print(f"{'refused 422 (gate: not a lesion photo)':<40} {statuses.get(422, 0):10d}")
    print(f"{'other errors':<40} {sum(n for s, n in statuses.items() if s not in (200, 422, 429)):10d}")
    print(f"{'throughput, all answers (requests/s)':<40} {len(m.results) / m.wall:10.1f}")
    print(f"{'throughput, predictions (requests/s)':<40} {statuses.get(200, 0) / m.wall:10.1f}")
    if len(ok):
        print(f"{'HTTP latency of 200s, p50 (ms)':<40} {np.percentile(ok, 50):10.1f}")
        print(f"{'HTTP latency of 200s, p95 (ms)':<40} {np.percentile(ok, 95):10.1f}")
    print(f"{'baseline: model call in-process (ms)':<40} {statistics.median(direct):10.1f}")
    stages = stage_breakdown(args.variant, images)
    print(f"\none upload in-process, by stage ({len(images)} images x 2 rounds, median / p95 ms; accepted images):")
    for stage in ("decode + checks", "preprocess", "gate", "model", "quality", "storage", "gate, own resize (before)"):
        if stages.get(stage):
            print(f"  {stage:<38} {np.percentile(stages[stage], 50):7.2f} / {np.percentile(stages[stage], 95):7.2f}")
    if m.known:
        print(f"\nregistration response time, {len(m.known)} interleaved tries each (median, IQR in ms):")
        for label, times in (("address already registered", m.known), ("new address", m.new)):
            q1, q3 = np.percentile(times, [25, 75])
            print(f"  {label:<28} {statistics.median(times):8.1f}  ({q1:.1f}-{q3:.1f})")
        print(f"  {'difference of medians':<28} {statistics.median(m.known) - statistics.median(m.new):8.1f}")
    if m.bad:
        print(f"\nbad uploads, {args.bad_repeats} of each, two at once (response ms, median / max; status; worker CPU "
              "s per request; worker RSS growth MB):")
        for name, answers in m.bad.items():
            times = [ms for ms, _ in answers]
            codes = ",".join(sorted({str(code) for _, code in answers}))
            cpu, rss = m.bad_cost.get(name, (float("nan"), float("nan")))
            print(f"  {name:<34} {statistics.median(times):8.1f} / {max(times):8.1f}   {codes:<8} {cpu:6.3f} s "
                  f"{rss:+7.1f} MB")
        print(f"  anonymous login page meanwhile: median {statistics.median(m.page_times):.1f} ms, "
              f"max {max(m.page_times):.1f} ms ({len(m.page_times)} loads)")


def main(args: argparse.Namespace) -> int:
    images = [p.read_bytes() for p in sorted(Path(args.samples).glob("*.jpg"))]
    if not images:
        print(f"error: no sample JPEGs in {args.samples}", file=sys.stderr)
        return 2
    redis_proc, redis_url = (None, args.redis) if args.redis else _start_redis()
    limit_label = (f"raised for this run to {args.api_limit}" if args.api_limit
                   else f"the site's default ({os.environ.get('LESIONLITE_RATELIMIT_API', '120 per minute')})")
    with tempfile.TemporaryDirectory() as tmp:
        env = _production_env(args, instance=tmp, redis_url=redis_url)
        token = _prepare_instance(env)
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", str(args.workers), "--threads", "1",
                                   "-b", f"127.0.0.1:{args.port}", "--timeout", "120", "webapp:create_app()"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{args.port}"
        try:
            deadline = time.monotonic() + 60
            while _post(f"{base}/api/v1/predict", token, images[0])[1] != 200:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("error: gunicorn did not start", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            measured = _measure(args, images, base=base, token=token, redis_url=redis_url, server_pid=server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
            if redis_proc is not None:
                redis_proc.terminate()
    _print_report(args, measured, images=images, limit_label=limit_label)
    statuses = {status for _, status in measured.results} | {s for a in measured.bad.values() for _, s in a}
    return 0 if not statuses - {200, 400, 413, 422, 429} else 1

if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
