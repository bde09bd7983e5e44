"""The HTTP API with FastAPI's test client: scoring, jobs that survive a restart, keys, limits, errors."""

from __future__ import annotations

import base64
import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from imagery.data import write_image
from service.api import create_app
from service.config import ServiceConfig
from tests.service.helpers import FakeAssessor
from tests.service.helpers import rows as _rows
from tests.service.helpers import strip as _strip


def _client(tmp_path: Path, models, **cfg: Any) -> TestClient:
    config = ServiceConfig(workdir=str(tmp_path / "jobs"), **cfg)
    return TestClient(create_app(config, models=models, assessor=FakeAssessor(config)))


def _h5_b64(img: np.ndarray, folder: Path) -> str:
    path = write_image(folder / "p.h5", img)
    return base64.b64encode(path.read_bytes()).decode()


def test_health_and_score(tmp_path: Path, models) -> None:
    client = _client(tmp_path, models, images_root=str(tmp_path))
    assert client.get("/healthz").json() == {
        "status": "ok",
        "models": {"tabular": True, "imagery": True, "fusion": True},
    }
    rows = _rows(3)
    rows[0]["patch_b64"] = _h5_b64(rows[0].pop("image_array"), tmp_path)
    write_image(tmp_path / "img1.h5", rows[1].pop("image_array"))
    rows[1]["image"] = "img1.h5"
    rows[2].pop("image_array")
    r = client.post("/v1/score", json={"regions": rows})
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    assert [s["evidence"] for s in scores] == ["both", "both", "tabular_only"]
    assert all(0 <= s["p_fused"] <= 1 for s in scores) and scores[2]["note"] == "no image for this region"


def test_score_errors_are_one_line_json(tmp_path: Path, models) -> None:
    client = _client(tmp_path, models, max_batch=2)
    assert client.post("/v1/score", json={"regions": _strip(_rows(3))}).status_code == 413
    bad = _strip(_rows(1))
    bad[0].pop("rain_7d_mm")
    r = client.post("/v1/score", json={"regions": bad})
    assert r.status_code == 400 and "missing column(s) rain_7d_mm" in r.json()["error"]
    r = client.post("/v1/score", json={"regions": "nope"})
    assert r.status_code == 422 and r.json()["error"].startswith("invalid request: regions")
    outside = _strip(_rows(1))
    outside[0]["image"] = "/etc/passwd"
    r = client.post("/v1/score", json={"regions": outside})
    assert r.status_code == 400 and "images folder" in r.json()["error"]
    assert "Traceback" not in r.text


def test_api_key_is_required_and_compared(tmp_path: Path, models) -> None:
    client = _client(tmp_path, models, api_key="s3cret")
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/scenes").status_code == 401
    assert client.get("/v1/scenes", headers={"X-API-Key": "wrong"}).json() == {"error": "missing or wrong X-API-Key"}
    assert client.get("/v1/scenes", headers={"X-API-Key": "s3cret"}).json()["scenes"][0]["name"] == "demo"
    # the header only: a key in the URL is refused (URLs end up in logs, proxies and browser history)
    assert client.get("/v1/scenes?key=s3cret").status_code == 401


def _wait(client: TestClient, job_id: str) -> dict[str, Any]:
    for _ in range(100):
        state = client.get(f"/v1/jobs/{job_id}").json()
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {state}")


def test_assess_jobs_survive_a_restart(tmp_path: Path, models) -> None:
    client = _client(tmp_path, models)
    r = client.post("/v1/assess", json={"point": {"lat": 46.6, "lon": 13.8, "radius_m": 300}, "date": "2024-06-01"})
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    state = _wait(client, job_id)
    assert state["status"] == "done" and state["result"]["n"] == 1
    assert state["files"] == {"report.html": f"/v1/jobs/{job_id}/files/report.html"}
    assert client.get(state["files"]["report.html"]).text == "<html></html>"
    failed = _wait(
        client, client.post("/v1/assess", json={"bbox": [1, 1, 1.1, 1.1], "date": "2024-06-01"}).json()["job_id"]
    )
    assert failed["status"] == "failed" and failed["message"] == "no imagery for this region and date"
    again = _client(tmp_path, models)  # a new process on the same workdir
    assert again.get(f"/v1/jobs/{job_id}").json()["status"] == "done"
    assert again.get("/v1/jobs/" + "0" * 32).status_code == 404
    assert again.get(f"/v1/jobs/{job_id}/files/secret.txt").status_code == 404


def test_assess_bad_requests(tmp_path: Path, models) -> None:
    client = _client(tmp_path, models, max_area_km2=10, max_request_mb=0.01)
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    cases = [
        ({"bbox": [0, 0, 0.01, 0.01], "date": tomorrow}, 400, "in the future"),
        ({"bbox": [0, 0, 0.01, 0.01], "date": "2024-13-01"}, 400, "expected YYYY-MM-DD"),
        ({"bbox": [5, 0, 1, 1], "date": "2024-06-01"}, 400, "expected W < E"),
        ({"point": {"lat": 95, "lon": 0}, "date": "2024-06-01"}, 400, "-90 <= lat <= 90"),
        ({"bbox": [0, 0, 1, 1], "date": "2024-06-01"}, 400, "larger than the limit of 10 km2"),
        ({"region": {"type": "Polygon", "coordinates": "x"}, "date": "2024-06-01"}, 400, "not a valid GeoJSON"),
        ({"date": "2024-06-01"}, 400, "exactly one of region, point or bbox"),
    ]
    for body, status, message in cases:
        r = client.post("/v1/assess", json=body)
        assert r.status_code == status and message in r.json()["error"], (body, r.text)
    big = {"region": {"type": "Polygon", "coordinates": [[[0, 0]] * 2000]}, "date": "2024-06-01"}
    assert client.post("/v1/assess", json=big).status_code == 413


def test_no_stack_traces_in_responses(tmp_path: Path, models) -> None:
    class Broken(FakeAssessor):
        def scenes(self) -> list[dict[str, Any]]:
            raise RuntimeError("a bug with a secret path /srv/x")

    config = ServiceConfig(workdir=str(tmp_path / "jobs"))
    client = TestClient(create_app(config, models=models, assessor=Broken(config)), raise_server_exceptions=False)
    r = client.get("/v1/scenes")
    assert r.status_code == 500 and r.json() == {"error": "internal error (RuntimeError)"}


def test_upload_with_a_malformed_region_is_a_422(tmp_path: Path, models) -> None:
    client = _client(tmp_path, models)
    form = {"bands": "B4,B3,B2", "date": "2024-06-01", "region": "[1, 2]"}
    r = client.post("/v1/assess/upload", data=form, files={"scene": ("s.tif", b"x")})
    assert r.status_code == 422 and r.json()["error"].startswith("invalid request: region"), r.text
