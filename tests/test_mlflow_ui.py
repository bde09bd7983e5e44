"""The MLflow UI server opens the project's store and its REST API lists the run just logged."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest

from common.tracking import tracked_run

STARTUP_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict, timeout: float = 10) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _mlflow_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "mlflow"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mlflow")
    if found:
        return [found]
    pytest.skip("the mlflow command is not installed beside this Python")
    return []


def test_mlflow_ui_lists_the_logged_run(tracking_uri, tmp_path):
    with tracked_run("ui_check", {"alpha": 0.5}) as run:
        mlflow.log_metric("roc_auc_mean", 0.875)
    run_id = run.info.run_id
    exp_id = mlflow.get_experiment_by_name("ui_check").experiment_id

    port = _free_port()
    log = open(tmp_path / "ui.log", "w")  # noqa: SIM115 - closed in finally
    cmd = [*_mlflow_cmd(), "ui", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1"]  # one uvicorn worker: starts several times faster on a 2-core machine
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow ui exited with {proc.returncode}: {(tmp_path / 'ui.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow ui did not answer within {STARTUP_TIMEOUT_S}s")
            time.sleep(0.5)
        found = _post(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id], "max_results": 10})
        runs = {r["info"]["run_id"]: r for r in found.get("runs", [])}
        assert run_id in runs
        got = runs[run_id]
        assert got["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m["value"] for m in got["data"]["metrics"]}
        assert metrics["roc_auc_mean"] == pytest.approx(0.875)
        params = {p["key"]: p["value"] for p in got["data"]["params"]}
        assert params["alpha"] == "0.5"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (workers included)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
    assert proc.poll() is not None
