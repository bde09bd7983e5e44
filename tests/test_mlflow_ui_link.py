"""The runs-table link the commands print opens MLflow's model-training view in a fresh browser (headless
Chromium): MLflow 3's UI defaults to its GenAI view there, whatever the experiment's kind tag says."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest

from common.tracking import runs_table_url, tracked_run
from tests.test_mlflow_ui import STARTUP_TIMEOUT_S, _free_port, _mlflow_cmd

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _body(url: str, profile: Path, until) -> str:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(url)
        WebDriverWait(driver, 90).until(lambda d: until(d.find_element("tag name", "body").text))
        return driver.find_element("tag name", "body").text
    finally:
        driver.quit()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver")
def test_runs_table_link_opens_the_model_training_view(tracking_uri: str, tmp_path: Path) -> None:
    with tracked_run("link_check", {"alpha": 0.5}, run_name="r-link"):
        mlflow.log_metric("m", 1.0)
    port = _free_port()
    log = open(tmp_path / "ui.log", "w")  # noqa: SIM115 - closed in finally
    cmd = [*_mlflow_cmd(), "ui", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ui = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()[-2000:]
            try:
                urllib.request.urlopen(f"{ui}/health", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() < deadline, "mlflow ui did not start"
                time.sleep(0.5)
        link = runs_table_url("link_check", tracking_uri, ui=ui)
        assert link.endswith("/runs?workflowType=machine_learning")
        body = _body(link, tmp_path / "fresh", lambda text: "r-link" in text)
        assert "Model registry" in body and "Sessions" not in body  # the model-training sidebar, not GenAI's
        # the same page without the parameter, in another fresh browser: GenAI's sidebar (why the link has it)
        plain = _body(link.split("?")[0], tmp_path / "fresh2", lambda text: "r-link" in text)
        assert "Sessions" in plain
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
