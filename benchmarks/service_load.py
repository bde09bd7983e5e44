"""Load on the HTTP service: concurrent ``POST /v1/score`` requests against a real uvicorn server.

Starts the app in-process on 127.0.0.1 (a free port), sends ``--requests`` requests of ``--rows``
regions each, ``--concurrency`` at a time, and prints p50/p95/max latency, throughput and the error
count. With no model arguments it builds small models in a temporary folder (a LightGBM model, an
untrained tiny segmenter and a fuser), so it runs anywhere.

Usage::

    python benchmarks/service_load.py [--requests 200] [--concurrency 8] [--rows 8]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_load(
    cfg: Any, models: Any, assessor: Any, rows: list[dict[str, Any]], *, requests: int, concurrency: int
) -> dict[str, float]:
    """Serve ``create_app(cfg, models, assessor)`` on 127.0.0.1 and fire the requests; returns the report."""
    import httpx
    import uvicorn

    from service.api import create_app

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cfg, models=models, assessor=assessor), host="127.0.0.1", port=port, log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def one(_: int) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            r = httpx.post(f"{url}/v1/score", json={"regions": rows}, timeout=120)
            ok = r.status_code == 200 and len(r.json()["scores"]) == len(rows)
        except httpx.HTTPError:
            ok = False
        with lock:
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += 0 if ok else 1

    t_all = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t_all
    server.should_exit = True
    thread.join(timeout=30)
    lat = np.asarray(latencies)
    return {
        "requests": requests,
        "concurrency": concurrency,
        "rows_per_request": len(rows),
        "errors": errors,
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "max_ms": round(float(lat.max()), 1),
        "requests_per_s": round(requests / wall, 1),
    }


def main() -> None:
    import tempfile

    from fusion.demo.paired import PairedConfig, make_paired_regions
    from fusion.stacking import StackingFuser
    from imagery.inference import load_segmenter
    from service.config import ServiceConfig
    from tabular.serving import load_tabular_model
    from tests.fusion.helpers import oof_pair, segmenter_folder, tabular_model_folder
    from tests.service.helpers import FakeAssessor, rows, strip

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rows", type=int, default=8)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_paired_regions(PairedConfig(n_regions=60, size=16, seed=0))
        features = ["slope_deg", "relief_m", "rain_7d_mm", "soil_moisture", "ndvi"]
        tab = load_tabular_model(str(tabular_model_folder(pairs.table, features, Path(tmp) / "tab")))
        seg = load_segmenter(str(segmenter_folder(Path(tmp) / "seg")), device="cpu")
        t, i = oof_pair()
        cfg = ServiceConfig(workdir=str(Path(tmp) / "jobs"))
        report = run_load(
            cfg,
            (tab, seg, StackingFuser().fit_oof(t, i)),
            FakeAssessor(cfg),
            strip(rows(args.rows)),
            requests=args.requests,
            concurrency=args.concurrency,
        )
    print(f"machine: {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f}")
    print("| requests | concurrency | regions/request | errors | p50 ms | p95 ms | max ms | requests/s |")
    print("|---|---|---|---|---|---|---|---|")
    r = report
    print(
        f"| {r['requests']} | {r['concurrency']} | {r['rows_per_request']} | {r['errors']} | {r['p50_ms']} | "
        f"{r['p95_ms']} | {r['max_ms']} | {r['requests_per_s']} |"
    )


if __name__ == "__main__":
    main()
