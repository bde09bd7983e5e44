"""report.html: every value from input is escaped or travels as non-executed JSON (no script runs from the
data), and the page triages: decision words and colours, sorted table, thresholds, warnings, links, CSV."""

from __future__ import annotations

import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.report import (
    DECISION_WORDS,
    REPORT_ASSETS,
    VENDOR,
    decision_key,
    model_label,
    write_report,
)

EVIL = "<img src=x onerror=\"document.title='pwned'\">"
CLOSE = "</script><script>document.title='pwned'</script>"


class _Page(HTMLParser):
    """Every start tag with its attributes, and the text of each <script>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict[str, str | None] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = None

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        else:
            self.text.append(data)


def _png(path: Path) -> Path:
    cv2.imwrite(str(path), np.zeros((4, 4, 4), np.uint8))
    return path


def _square(x: float, y: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + 0.01, y], [x + 0.01, y + 0.01], [x, y + 0.01], [x, y]]]}


def _inputs(evil: str) -> tuple[dict, dict, dict]:
    rows = [
        {"region_id": f"a{evil}", "p_fused": 0.2, "decision": 0, "evidence": "both", "p_tabular": 0.1,
         "p_imagery": 0.65, "reason": f"neither sees a landslide {evil}", "top_features": f"slope {evil}",
         "note": f"n {evil}", "agree": True, "area_km2": 1.0},
        {"region_id": f"b{evil}", "p_fused": 0.91234, "decision": 1, "evidence": "tabular_only", "p_tabular": 0.8,
         "p_imagery": None, "reason": evil, "top_features": evil, "note": f"imagery missing {evil}",
         "agree": None, "area_km2": 2.0},
        {"region_id": f"c{evil}", "p_fused": None, "decision": None, "evidence": "none", "p_tabular": None,
         "p_imagery": None, "reason": evil, "top_features": "", "note": evil, "agree": None, "area_km2": 3.0},
    ]  # fmt: skip
    regions = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": _square(i * 0.02, 0), "properties": r} for i, r in enumerate(rows)
        ],
    }
    slides = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": _square(0.021, 0.001),
                "properties": {"region_id": f"b{evil}", "area_m2": 1234.5, "mean_prob": 0.8, "max_prob": 0.97},
            }
        ],
    }
    report = {
        "date": f"2024-06-01{evil}",
        "window": ["2024-05-02", "2024-06-01"],
        "scene": {"scene_id": f"S2{evil}", "date": "2024-04-20", "crs": f"EPSG:32633{evil}", "masked_share": 0.35},
        "scene_notes": [f"scene note {evil}"],
        "warnings": [f"resolution mismatch {evil}", {"message": f"synthetic model {evil}"}],
        "scene_bounds": [0, 0, 0.06, 0.01],
        "models": {
            "tabular": f"models:/tab{evil}/3",
            "imagery": f"runs:/0123456789abcdef/{evil}",
            "fusion": f"/tmp/x/{evil}.json",
            "policy": evil,
            "imagery_threshold": 0.9,
            "tabular_threshold": 0.31,
            "fused_threshold": 0.42,
        },
    }
    return report, regions, slides


@pytest.mark.parametrize("evil", [EVIL, CLOSE, "@ROWS@ @DATA@ -->&amp;<!--"])
def test_markup_in_every_field_is_only_text(tmp_path: Path, evil: str) -> None:
    report, regions, slides = _inputs(evil)
    (tmp_path / "regions.geojson").write_text("{}")
    out = write_report(tmp_path / "report.html", report, regions, slides, _png(tmp_path / "rgb.png"))
    page = out.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(page)
    # no markup from the data: no <img>, no inline handler, exactly the three fixed scripts
    assert not [t for t, _a in parsed.tags if t in ("img", "iframe", "object", "embed")]
    assert not [(t, k) for t, a in parsed.tags for k in a if k.lower().startswith("on")]
    assert [a.get("type") for a, _t in parsed.scripts] == ["application/json", None, None]
    assert parsed.scripts[1][1] == (VENDOR / "leaflet.js").read_text(encoding="utf-8")
    assert parsed.scripts[2][1] == (REPORT_ASSETS / "report.js").read_text(encoding="utf-8")
    assert page.count("<script") == 3 and page.count("</script>") == 3
    # the JSON block holds the values unchanged (once decoded) and no raw "<"
    data = json.loads(parsed.scripts[0][1])
    assert "<" not in parsed.scripts[0][1]
    ids = [f["properties"]["region_id"] for f in data["regions"]["features"]]
    assert ids == [f"b{evil}", f"a{evil}", f"c{evil}"]  # sorted by p_fused, unknown last
    # the visible text carries every field as text
    text = "".join(parsed.text)
    for needle in (f"S2{evil}", f"scene note {evil}", f"resolution mismatch {evil}", f"synthetic model {evil}",
                   f"neither sees a landslide {evil}", f"imagery missing {evil}", f"a{evil}"):  # fmt: skip
        assert needle in text, needle


def test_report_triages(tmp_path: Path) -> None:
    report, regions, slides = _inputs("")
    for name in ("regions.geojson", "probability.tif", "report.json"):
        (tmp_path / name).write_text("x")
    out = write_report(tmp_path / "report.html", report, regions, slides, _png(tmp_path / "rgb.png"))
    page = out.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(page)
    text = " ".join(parsed.text)
    # header: model names, not URIs; thresholds; scene date
    assert "tab v3" in text and "run 01234567" in text and "models:/" not in text
    assert "2024-04-20" in text and "threshold 0.310" in text
    # warnings at the top, before the map: date outside the window, cloud share, missing evidence
    warn = page[page.index('id="warnings"') : page.index('id="map"')]
    assert "outside the searched window 2024-05-02 to 2024-06-01" in warn
    assert "35% of the scene is masked" in warn
    assert "1 region(s) scored without imagery" in warn and "no evidence at all" in warn
    # table: sorted by p_fused, 3 decimals with each model's threshold, decisions in words
    body = page[page.index("<tbody>") : page.index("</tbody>")]
    assert body.index(">b<") < body.index(">a<") < body.index(">c<")
    assert "0.912" in body and "0.91234<" not in body and "≥ 0.420" in body and "0.650 <span" in body
    for words in DECISION_WORDS.values():
        assert f">{words}<" in body
    # links to the files beside it that exist, the CSV button, the legend
    assert re.findall(r'<a href="([^"]+)" download>', page) == ["regions.geojson", "probability.tif", "report.json"]
    assert 'id="csv"' in page and "region: landslide likely" in page and "detected landslide" in page
    data = json.loads(parsed.scripts[0][1])
    assert "threshold_fused" in data["csv_columns"] and data["rows"][0]["decision"] == "landslide likely"


def test_labels_and_decisions() -> None:
    assert model_label("models:/landslides/4") == "landslides v4"
    assert model_label("models:/landslides@champion") == "landslides @champion"
    assert model_label("runs:/abcdef0123456789/model") == "run abcdef01"
    assert model_label("/data/models/fuser.json") == "fuser.json"
    assert model_label({"name": "seg", "version": 2}) == "seg v2"
    assert [decision_key(v) for v in (1, 0, None, True, "1", float("nan"))] == [
        "likely", "unlikely", "unknown", "likely", "likely", "unknown"
    ]  # fmt: skip


CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver")
def test_nothing_runs_in_a_browser(tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    report, regions, slides = _inputs(EVIL + CLOSE)
    out = write_report(tmp_path / "report.html", report, regions, slides, _png(tmp_path / "rgb.png"))
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'chrome'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(out.as_uri())
        for layer in driver.find_elements(By.CSS_SELECTOR, "#map path.leaflet-interactive"):
            driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", layer)
        assert driver.title != "pwned"  # the scene id (shown escaped in the title) carries the word as text
        assert driver.find_elements(By.CSS_SELECTOR, "#map img[src='x']") == []
        assert len(driver.find_elements(By.CSS_SELECTOR, "#map path.leaflet-interactive")) == 4
    finally:
        driver.quit()


NODE = shutil.which("node")
HARNESS = Path(__file__).with_name("report_harness.js")  # a stub DOM and Leaflet for report.js


@pytest.mark.skipif(NODE is None, reason="needs node to run the page's script")
def test_page_script_sets_text_sorts_and_downloads(tmp_path: Path) -> None:
    """report.js under a stub DOM (node): popups are DOM nodes with text, a header click sorts, the CSV is
    built from the rows with formulas neutralised."""
    import subprocess

    report, regions, slides = _inputs(EVIL)
    regions["features"][0]["properties"]["note"] = "=HYPERLINK(1)"
    out = write_report(tmp_path / "report.html", report, regions, slides, _png(tmp_path / "rgb.png"))
    parsed = _Page()
    parsed.feed(out.read_text(encoding="utf-8"))
    body = out.read_text(encoding="utf-8").split("<tbody>")[1].split("</tbody>")[0]
    rows = [re.findall(r'data-v="([^"]*)"', tr) for tr in body.split("<tr")[1:]]
    rows = [[html.unescape(v) for v in r] for r in rows]
    spec = tmp_path / "in.json"
    spec.write_text(json.dumps({"data": parsed.scripts[0][1], "rows": rows}))
    res = subprocess.run(
        [NODE, str(HARNESS), str(spec), str(REPORT_ASSETS / "report.js"), "0"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    got = json.loads(res.stdout)
    assert len(got["popups"]) == 4 and not [p for p in got["popups"] if p.startswith("STRING:")]
    assert f"region b{EVIL}" in got["popups"][0] and "p_fused: 0.912 (threshold 0.420)" in got["popups"][0]
    assert "decision: landslide likely" in got["popups"][0] and "p_imagery: no evidence" in got["popups"][0]
    assert "area: 1,235 m²" in got["popups"][3]
    assert got["order"] == [f"a{EVIL}", f"b{EVIL}", f"c{EVIL}"]  # sorted by region id, ascending
    lines = got["csv"].split("\r\n")
    assert lines[0].startswith("region_id,p_fused,decision") and "threshold_imagery" in lines[0]
    assert "'=HYPERLINK(1)" in got["csv"] and '"<img src=x onerror=""document.title' in got["csv"]
