"""End to end in a browser: the service on 127.0.0.1 with the real 29RKH scene, its map page in headless
Chromium (Debian's chromium + chromium-driver, driven by Selenium); a box is submitted and the
landslide polygons and the per-region scores appear."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import shared_dataset
from tests.scenes.helpers import L2A_BANDS, tiny_model

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.real_data
@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver")
def test_map_page_assesses_a_box(tmp_path: Path, _template_store: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    (scenes / "29RKH").symlink_to(shared_dataset("sentinel2_l2a_cogs_29RKH"))
    seg = tiny_model(tmp_path / "seg", L2A_BANDS, prob=0.9, gsd_m=100.0)  # the 29RKH tile's pixels
    shutil.copyfile(_template_store, tmp_path / "store.db")
    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.serve",
            "--imagery-model",
            str(seg),
            "--scenes-root",
            str(scenes),
            "--workdir",
            str(tmp_path / "jobs"),
            "--port",
            str(port),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'store.db'}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome'}",
        "--window-size=1280,900",
    ):
        opts.add_argument(flag)
    driver = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1][-2000:]
                assert time.time() < deadline, "the server did not start"
                time.sleep(0.5)
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "scene").get_attribute("value") == "29RKH")
        wait.until(lambda d: d.find_element(By.ID, "west").get_attribute("value") != "")
        # before any request: the scene's true-colour quick-look under its outline
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#map img.leaflet-image-layer"))
        driver.find_element(By.ID, "date").clear()
        driver.find_element(By.ID, "date").send_keys("2020-03-01")  # the scene is of 2020-02-19
        driver.execute_script("document.getElementById('date').value = '2020-03-01';")
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 240).until(
            lambda d: (
                d.find_element(By.ID, "polygons").get_attribute("class") == "done"
                or d.find_element(By.ID, "error").text
            )
        )
        assert driver.find_element(By.ID, "error").text == ""
        assert "landslide polygon(s)" in driver.find_element(By.ID, "polygons").text
        rows = driver.find_elements(By.CSS_SELECTOR, "#scores tbody tr")
        assert len(rows) == 1 and "imagery" in rows[0].text
        paths = driver.find_elements(By.CSS_SELECTOR, "#map path.leaflet-interactive")
        assert len(paths) >= 2  # the region outline and at least one landslide polygon drawn on the map
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
