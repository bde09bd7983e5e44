"""A bounded load test: 96 concurrent /v1/score requests (8 at a time) against a real uvicorn server on
127.0.0.1; zero errors, and the p50/p95 latencies are printed (``benchmarks/service_load.py`` records
them)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.service_load import run_load
from service.config import ServiceConfig
from tests.service.helpers import FakeAssessor, rows, strip


def test_concurrent_score_requests(tmp_path: Path, models, capsys) -> None:
    config = ServiceConfig(workdir=str(tmp_path / "jobs"))
    report = run_load(config, models, FakeAssessor(config), strip(rows(8)), requests=96, concurrency=8)
    with capsys.disabled():
        print(f"\n/v1/score load: {report}")
    assert report["errors"] == 0 and report["requests"] == 96
    assert 0 < report["p50_ms"] <= report["p95_ms"]
