"""Dashboard benchmark: page script-run times over a store of >= 1,000 variants, and live-test latency; with
``--browser``, what a user waits for in Debian's Chromium instead.

    python -m scripts.bench_dashboard [--variants 1200] [--runs 5]
    python -m scripts.bench_dashboard --browser [--variants 10000] [--restarts 3] [--runs 5]

``--browser`` starts the dashboard as ``streamlit run`` does, on the synthetic store, and times a new browser
session from navigation to the Trade-offs headline and to a drawn chart (the Vega-Lite chart's SVG in the page):
the first visit after each server start (imports, the store's first query) and the later visits to the same server.

The store is synthetic (random figures in the real schema, clearly not results): it only exercises the
queries and plots at scale. Live-test latency is measured end to end (decode, preprocess, model) for an
int8 static ONNX variant of efficientnet_b0 at 224 px, with its fp32 ONNX and PyTorch eager sources
measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from core.artifacts.card import Card
from core.artifacts.records import Origin
from core.classes import CLASSES
from core.cli import run_cli, script_parser
from core.compress.export import export_onnx
from core.compress.latency import summarize, time_calls
from core.compress.quantize import quantize_onnx
from core.data.synthetic import synthetic_example
from core.data.transforms import preprocessing_for
from core.metrics import evaluate_predictions
from core.models import create_model
from core.provenance import Provenance
from core.serve.imaging import check_image, reencode_jpeg
from core.serve.predict import OnnxPredictor, TorchPredictor, predict_image
from core.store.results import ResultsStore, RunRecord

PAGES = ["views/tradeoffs.py", "views/runs.py", "views/run_detail.py", "views/compare.py", "views/live_panel.py"]
APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def build_store(path: Path, n_variants: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    modes = ["torch_fp32", "fp32", "dynamic", "static", "fp16", "torch_dynamic"]
    ratios = [0.0, 0.25, 0.5, 0.7]
    models = ["efficientnet_b0", "efficientnet_b4", "resnet50", "densenet169", "mobilenetv3_large_100"]
    y = rng.integers(0, len(CLASSES), 300)
    with ResultsStore(path) as store:
        for k in range(n_variants):
            model, ratio, mode = models[k % 5], ratios[(k // 5) % 4], modes[(k // 20) % 6]
            parent = f"bench-parent-{model}-{k // 120}"
            probs = rng.dirichlet(np.ones(len(CLASSES)), size=len(y))
            variant = f"dense-{mode}" if ratio == 0 else f"pruned-{ratio:g}-{mode}"
            store.record_run(RunRecord(
                run_id=f"{parent}.p{ratio:g}.{mode}.{k}", kind="variant", model=model, variant=variant,
                config={"mode": mode}, provenance=Provenance("synthetic-bench", "bench", "bench", 0, "cpu", "bench"),
                parent_run_id=parent,
                evaluations={"test": evaluate_predictions(y, probs)},
                scalars={"deploy": {"size_mb": float(rng.uniform(1, 100)), "latency_b1_ms": float(rng.uniform(2, 80)),
                                    "pruning_ratio": ratio, "params": 1e6, "macs": 1e9, "sparsity": 0.0}}))


def page_times(db: Path, runs: int, *, cold: bool) -> dict[str, list[float]]:
    """Script-run time of each page; ``cold`` clears Streamlit's data cache first (the store is queried again)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["LESIONLITE_DB"] = str(db)
    times: dict[str, list[float]] = {p: [] for p in PAGES}
    warm = AppTest.from_file(APP, default_timeout=300)
    warm.run()  # Python imports: once per server process, not a page figure
    for _ in range(runs):
        for page in PAGES:
            at = AppTest.from_file(APP, default_timeout=300)
            at.run()
            if cold:
                st.cache_data.clear()
            start = time.perf_counter()
            at.switch_page(page)
            at.run()
            times[page].append(time.perf_counter() - start)
            if at.exception:
                raise RuntimeError(f"{page}: {at.exception[0].value}")
    return times


def live_latency(workdir: Path, runs: int) -> dict[str, tuple[float, float]]:
    torch.set_num_threads(2)
    model = create_model("efficientnet_b0", pretrained=False).eval()
    prep = preprocessing_for(model, 224)
    fp32 = workdir / "fp32.onnx"
    export_onnx(model, fp32, input_size=224)
    calib = np.random.default_rng(0).standard_normal((16, 3, 224, 224), dtype=np.float32)
    int8 = quantize_onnx(fp32, workdir / "int8.onnx", mode="static", calibration=calib)
    card = Card(run_id="bench", architecture="efficientnet_b0", preprocessing=prep, origin=Origin.untrained())
    image = check_image(reencode_jpeg(synthetic_example("mel", width=600, height=450)))
    out = {}
    for name, predictor in (("torch eager fp32", TorchPredictor(model, card)),
                            ("onnx fp32", OnnxPredictor(fp32, card, threads=2)),
                            ("onnx int8 static", OnnxPredictor(int8, card, threads=2))):
        total = summarize(time_calls(lambda p=predictor: predict_image(p, image.image, name=""), runs=runs * 6),
                          batch=1, threads=2)
        model_only = statistics.median(predict_image(predictor, image.image, name="").latency_ms
                                       for _ in range(runs * 6))
        out[name] = (total.median_ms, model_only)
    return out


CHART_DRAWN = ".vega-embed svg g.mark-symbol path"  # a point of the Trade-offs chart, drawn
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@contextmanager
def dashboard_server(db: Path) -> Iterator[str]:
    """``streamlit run dashboard/app.py`` on ``db`` at a free local port, as a user starts it; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            env={**os.environ, "LESIONLITE_DB": str(db)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the dashboard did not start (exit status {proc.poll()})") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def browser_times(db: Path, *, restarts: int, runs: int) -> dict[str, list[float]]:
    """Seconds from navigation to the headline and to a drawn chart, per visit kind: "first" after a server start,
    in a new browser profile (nothing cached); "later", a new tab of that profile (a new Streamlit session, the
    browser's cache warm, as when a user comes back)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise SystemExit("--browser needs playwright (pip install -r requirements-dev.txt)") from exc
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("--browser needs Debian's chromium (apt-get install chromium)")
    times: dict[str, list[float]] = {f"{visit} {what}": [] for visit in ("first", "later")
                                     for what in ("headline", "chart")}
    with sync_playwright() as p:
        for restart in range(restarts):
            # A profile on disk, as a user's: its HTTP and compiled-script caches serve the later visits.
            with dashboard_server(db) as url, tempfile.TemporaryDirectory() as profile:
                context = p.chromium.launch_persistent_context(profile, executable_path=chromium, args=CHROMIUM_ARGS,
                                                               viewport={"width": 1440, "height": 900})
                for visit in range(runs + 1):
                    kind = "first" if visit == 0 else "later"
                    page = context.new_page()
                    start = time.perf_counter()
                    page.goto(url)
                    page.get_by_text("Recommended:").first.wait_for(timeout=120_000)
                    times[f"{kind} headline"].append(time.perf_counter() - start)
                    page.locator(CHART_DRAWN).first.wait_for(timeout=120_000)
                    times[f"{kind} chart"].append(time.perf_counter() - start)
                    page.close()
                context.close()
            print(f"server start {restart + 1}/{restarts}: first visit {times['first chart'][-1]:.2f} s to the chart",
                  flush=True)
    return times


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Benchmark the dashboard", add_help=add_help)
    parser.add_argument("--variants", type=int, default=None,
                        help="variants in the synthetic store (default: 1200; 10000 with --browser)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per page (with --browser: later visits)")
    parser.add_argument("--browser", action="store_true",
                        help="time page loads in Debian's Chromium against a running dashboard instead")
    parser.add_argument("--restarts", type=int, default=3, help="--browser: server starts (one first visit each)")
    parser.add_argument("--store", type=Path, default=None,
                        help="--browser: keep the synthetic store at this path and reuse it when it exists "
                             "(writing 10,000 variants takes minutes; the store itself is not timed)")
    return parser


def main_browser(args: argparse.Namespace) -> int:
    n = args.variants or 10_000
    with tempfile.TemporaryDirectory() as tmp:
        db = args.store or Path(tmp) / "bench.duckdb"
        if db.is_file():
            with ResultsStore(db, read_only=True) as store:
                n = len(store.runs())
            print(f"synthetic store: {n} variants in {db} (reused)", flush=True)
        else:
            t0 = time.perf_counter()
            build_store(db, n)
            print(f"synthetic store: {n} variants written in {time.perf_counter() - t0:.1f} s", flush=True)
        times = browser_times(db, restarts=args.restarts, runs=args.runs)
    budgets = {"first": 3.0, "later": 1.5}
    print(f"\nChromium 1440x900, navigation to the Trade-offs page's headline and to a drawn chart; {n} variants; "
          f"{args.restarts} server starts, {args.runs} later visits each (to the chart: first 3.0 s, later 1.5 s)")
    print(f"{'visit':<16} {'n':>3} {'median s':>9} {'min s':>7} {'max s':>7} {'within':>7}")
    for name, ts in times.items():
        within = "yes" if max(ts) <= budgets[name.split()[0]] else "NO"
        print(f"{name:<16} {len(ts):3d} {statistics.median(ts):9.2f} {min(ts):7.2f} {max(ts):7.2f} "
              f"{within if name.endswith('chart') else '':>7}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.browser:
        return main_browser(args)
    args.variants = args.variants or 1200
    with tempfile.TemporaryDirectory() as tmp:
        lat = live_latency(Path(tmp), args.runs)  # first: before Streamlit's runtime threads exist here
        db = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        build_store(db, args.variants)
        print(f"synthetic store: {args.variants} variants written in {time.perf_counter() - t0:.1f} s")
        print(f"\npage script-run time (AppTest, {args.runs} runs each, budget 2.0 s); cold = data cache cleared, "
              "so the page queries the store again")
        print(f"{'page':<22} {'cache':<5} {'median s':>9} {'max s':>7} {'within':>7}")
        for cold in (True, False):
            for page, ts in page_times(db, args.runs, cold=cold).items():
                print(f"{page:<22} {'cold' if cold else 'warm':<5} {statistics.median(ts):9.3f} {max(ts):7.3f} "
                      f"{'yes' if max(ts) < 2 else 'NO':>7}")
    print("\nlive-test prediction, efficientnet_b0 at 224 px, 2 threads, 600x450 JPEG (budget 100 ms, int8)")
    print(f"{'variant':<18} {'end-to-end ms':>14} {'model only ms':>14}")
    for name, (total, model_only) in lat.items():
        print(f"{name:<18} {total:14.1f} {model_only:14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
