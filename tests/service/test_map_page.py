"""The map page in headless Chromium against the app served in this process (a fake assessor, no scene):
scene outlines before any request, the date at the newest scene's, no STAC choice without a STAC URL, a box
split into a grid of regions, uploaded GeoPackage regions, each row linking to its polygon, the job's
warnings and its download links; and ``/docs`` rendering from the app's own files."""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
import shapely.geometry
from fastapi.testclient import TestClient

from common.geo import Feature, write_gpkg
from service.api import create_app
from service.config import ServiceConfig
from service.regions import check_regions, from_request

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCENES = [
    {"name": "older", "date": "2023-05-01", "bbox": [10.0, 45.0, 10.5, 45.5]},
    {"name": "newest", "date": "2024-06-01T10:20:30", "bbox": [10.4, 45.2, 10.9, 45.7]},
]
WARNING = "the scene's date 2024-06-01 is outside the searched window 2024-05-01 to 2024-05-20"


class PageAssessor:
    """Answers like :class:`service.assess.Assessor` (regions with scores, files, warnings) without a scene."""

    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg, self.requests = cfg, []

    def check(self, request: dict[str, Any]) -> None:
        check_regions(from_request(request), self.cfg.max_area_km2)

    def scenes(self) -> list[dict[str, Any]]:
        return SCENES

    def quicklook(self, name: str, folder: Path) -> Path:
        import cv2

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        cv2.imwrite(str(path), np.full((8, 8, 3), 200, np.uint8))
        return path

    def run(self, request: dict[str, Any], folder: Path, progress) -> dict[str, Any]:
        self.requests.append(request)
        regions = from_request(request)
        feats = [
            {
                "type": "Feature",
                "geometry": shapely.geometry.mapping(r.geometry),
                "properties": {
                    "region_id": r.id,
                    "p_fused": round(0.1 + 0.8 * i / max(1, len(regions) - 1), 3),
                    "decision": int(i >= len(regions) / 2),
                    "evidence": "both",
                },
            }
            for i, r in enumerate(regions)
        ]
        fc = {"type": "FeatureCollection", "features": feats}
        empty = {"type": "FeatureCollection", "features": []}
        (folder / "regions.geojson").write_text(json.dumps(fc))
        (folder / "landslides.geojson").write_text(json.dumps(empty))
        (folder / "probability.tif").write_bytes(b"II*\x00")
        (folder / "report.html").write_text("<html></html>")
        return {"regions": fc, "landslides": empty, "warnings": [WARNING], "scene_bounds": None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path, models) -> Iterator[tuple[str, PageAssessor]]:
    import uvicorn

    cfg = ServiceConfig(workdir=str(tmp_path / "jobs"))
    assessor = PageAssessor(cfg)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cfg, models=models, assessor=assessor), host="127.0.0.1", port=port, log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", assessor
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome'}",
        "--window-size=1280,900",
    ):
        opts.add_argument(flag)
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield d
    finally:
        d.quit()


def _wait_done(driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(
        lambda d: (
            d.find_element(By.ID, "polygons").get_attribute("class") == "done" or d.find_element(By.ID, "error").text
        )
    )
    assert driver.find_element(By.ID, "error").text == ""


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver")
def test_map_page_guides_and_assesses(served: tuple[str, PageAssessor], driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, assessor = served
    driver.get(url)
    wait = WebDriverWait(driver, 30)
    # before any request: the scenes' outlines, the newest scene picked and its date, a box inside it
    wait.until(lambda d: d.find_element(By.ID, "scene").get_attribute("value") == "newest")
    assert driver.find_element(By.ID, "date").get_attribute("value") == "2024-06-01"
    outlines = driver.find_elements(By.CSS_SELECTOR, '#map path.leaflet-interactive[stroke-dasharray="4"]')
    assert len(outlines) == len(SCENES)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map img.leaflet-image-layer")) == len(SCENES))
    options = [o.text for o in driver.find_elements(By.CSS_SELECTOR, "#scene option")]
    assert len(options) == len(SCENES) and not any("STAC" in o for o in options)  # no STAC URL: not offered
    box = [float(driver.find_element(By.ID, k).get_attribute("value")) for k in ("west", "south", "east", "north")]
    assert 10.4 < box[0] < box[2] < 10.9 and 45.2 < box[1] < box[3] < 45.7

    # the box split into a grid of cells of 2 km, each assessed as its own region
    driver.find_element(By.ID, "cellkm").send_keys("2")
    wait.until(lambda d: re.fullmatch(r"\d+ regions", d.find_element(By.ID, "gridinfo").text))
    n = int(driver.find_element(By.ID, "gridinfo").text.split()[0])
    assert n == 3 * 2  # 0.05 deg: 5.5 km north-south, 3.9 km east-west at 45.45 N
    driver.find_element(By.ID, "submit").click()
    _wait_done(driver)
    sent = assessor.requests[-1]
    assert "bbox" not in sent or not sent["bbox"]
    ids = [f["properties"]["region_id"] for f in sent["region"]["features"]]
    assert ids[0] == "r1c1" and len(ids) == n == len(set(ids))
    rows = driver.find_elements(By.CSS_SELECTOR, "#scores tbody tr")
    assert len(rows) == n
    p = [float(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows]
    assert p == sorted(p, reverse=True) and rows[0].text.count("landslide likely") == 1
    # each row's id shows its polygon on the map
    link = rows[-1].find_element(By.CSS_SELECTOR, "td a")
    rid = link.text
    link.click()
    wait.until(lambda d: f"region {rid}" in d.find_element(By.CSS_SELECTOR, ".leaflet-popup-content").text)
    # the job's warnings and its files
    assert [w.text for w in driver.find_elements(By.CSS_SELECTOR, "#warnings li")] == [WARNING]
    files = {a.text for a in driver.find_elements(By.CSS_SELECTOR, "#files a")}
    assert {"regions.geojson", "landslides.geojson", "probability.tif", "report.html"} <= files

    # uploaded regions (a GeoPackage in UTM): each polygon its own region, ids from the file
    utm = [shapely.box(620_000 + i * 1000, 5_030_000, 620_800 + i * 1000, 5_030_800) for i in range(2)]
    gpkg = write_gpkg([Feature(g, {"name": f"slope-{i}"}) for i, g in enumerate(utm)], tmp_path / "mine.gpkg", 32632)
    driver.find_element(By.ID, "regionsfile").send_keys(str(gpkg))
    wait.until(lambda d: d.find_element(By.ID, "regionsinfo").text == "2 regions from mine.gpkg")
    driver.find_element(By.ID, "submit").click()
    _wait_done(driver)
    sent = assessor.requests[-1]
    assert [f["properties"]["region_id"] for f in sent["region"]["features"]] == ["slope-0", "slope-1"]
    assert len(driver.find_elements(By.CSS_SELECTOR, "#scores tbody tr")) == 2

    # /docs renders from the app's own files
    driver.get(url + "/docs")
    WebDriverWait(driver, 30).until(lambda d: "Landslide detection" in d.find_element(By.TAG_NAME, "body").text)
    assert driver.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock")


def test_scenes_say_whether_stac_search_is_offered(tmp_path: Path, models) -> None:
    for stac_url, offered in ((None, False), ("https://stac.example.org/v1", True)):
        cfg = ServiceConfig(workdir=str(tmp_path / "jobs"), stac_url=stac_url)
        client = TestClient(create_app(cfg, models=models, assessor=PageAssessor(cfg)))
        assert client.get("/v1/scenes").json() == {"scenes": SCENES, "stac_search": offered}


def test_uploaded_regions_become_one_region_each(tmp_path: Path, models) -> None:
    cfg = ServiceConfig(workdir=str(tmp_path / "jobs"), max_area_km2=50)
    client = TestClient(create_app(cfg, models=models, assessor=PageAssessor(cfg)))
    geo = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"id": k},
                "geometry": shapely.geometry.mapping(shapely.box(x, 45, x + 0.01, 45.01)),
            }
            for k, x in (("a", 10.0), ("b", 10.1))
        ],
    }
    r = client.post("/v1/regions", files={"file": ("r.geojson", json.dumps(geo).encode())})
    assert r.status_code == 200
    assert [f["properties"]["region_id"] for f in r.json()["region"]["features"]] == ["a", "b"]
    utm = shapely.box(620_000, 5_030_000, 621_000, 5_031_000)
    gpkg = write_gpkg([Feature(utm, {"region_id": "x"})], tmp_path / "r.gpkg", 32632)
    r = client.post("/v1/regions", files={"file": ("r.gpkg", gpkg.read_bytes())})
    assert r.status_code == 200
    (feat,) = r.json()["region"]["features"]
    lon, lat = shapely.geometry.shape(feat["geometry"]).centroid.coords[0]
    assert feat["properties"]["region_id"] == "x" and 10.5 < lon < 10.6 and 45.4 < lat < 45.5  # reprojected
    for body, words in (
        (b"not a file of regions", "expected a GeoJSON or GeoPackage"),
        (json.dumps({"type": "Point", "coordinates": [10, 45]}).encode(), "expected a Polygon"),
        (json.dumps(shapely.geometry.mapping(shapely.box(10, 45, 11, 46))).encode(), "larger than the limit"),
    ):
        r = client.post("/v1/regions", files={"file": ("r.json", body)})
        assert r.status_code == 400 and words in r.json()["error"], r.json()
