"""Issue 18: the service trusts nothing it is sent. Each case is rebuilt here: a local STAC API on 127.0.0.1,
an HTTP server that records (or never answers) requests, crafted files (a VRT saved as .tif, a gzip HDF5
bomb), chunked bodies without Content-Length, a full queue, a hung job, a port in use, nonsense values."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient

from common.cancel import check_cancelled
from common.cli import UserError, run_main
from common.geo import ClientSources, Grid, client_reads, inspect_upload, transform_geometries
from service.api import create_app
from service.assess import Assessor
from service.config import ServiceConfig
from service.jobs import JobStore, QueueFull
from service.regions import MAX_VERTICES, box, check_regions, circle, from_geojson
from service.security import client_message
from tests.scenes.helpers import L2A_BANDS, tiny_model, write_tif
from tests.scenes.stac_server import StacServer
from tests.service.helpers import FakeAssessor
from tests.service.helpers import rows as _rows
from tests.service.helpers import strip as _strip

DATE = "2024-06-01"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small synthetic UTM band folder, a segmenter on its bands, and a point inside the scene."""
    from fusion.demo.synthetic_scene import write_synthetic_scene
    from imagery.inference import load_segmenter

    tmp = tmp_path_factory.mktemp("world")
    scene = write_synthetic_scene(tmp / "scenes" / "demo", size=120, seed=1, cloud_fraction=0.0, dem=False)
    seg = load_segmenter(str(tiny_model(tmp / "seg", L2A_BANDS, prob=0.9)), device="cpu")
    grid = Grid.from_raster(scene / "B04.tif")
    w, s, e, n = grid.bounds_in("EPSG:4326")
    centre = transform_geometries(
        shapely.Point((grid.bounds[0] + grid.bounds[2]) / 2, (grid.bounds[1] + grid.bounds[3]) / 2),
        grid.crs,
        "EPSG:4326",
    )
    return {"scene": scene, "root": scene.parent, "seg": seg, "lonlat_box": (w, s, e, n), "centre": centre}


def _item(world: dict[str, Any], href: Any) -> dict[str, Any]:
    """A STAC item over the synthetic scene; ``href(path)`` gives each band asset's href."""
    w, s, e, n = world["lonlat_box"]
    assets = {
        p.stem: {"href": href(p), "type": "image/tiff; application=geotiff"}
        for p in sorted(world["scene"].glob("*.tif"))
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "S2_TEST_20240520",
        "collection": "sentinel-2-l2a",
        "geometry": shapely.geometry.mapping(shapely.box(w - 0.01, s - 0.01, e + 0.01, n + 0.01)),
        "bbox": [w - 0.01, s - 0.01, e + 0.01, n + 0.01],
        "properties": {"datetime": "2024-05-20T10:00:00Z", "eo:cloud_cover": 1.0},
        "assets": assets,
        "links": [],
    }


def _request(world: dict[str, Any], **extra: Any) -> dict[str, Any]:
    c = world["centre"]
    return {"point": {"lat": c.y, "lon": c.x, "radius_m": 150.0}, "date": DATE, "days_before": 30, **extra}


class Recorder:
    """An HTTP server on 127.0.0.1 recording every request; ``hang=True``: accepts and never answers."""

    def __init__(self, hang: bool = False) -> None:
        self.requests: list[str] = []
        self.hang = hang
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def _any(self) -> None:
                rec.requests.append(f"{self.command} {self.path}")
                if rec.hang:
                    time.sleep(30)
                    return
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_POST = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Recorder:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _client(tmp_path: Path, models: Any, assessor: Any = None, **cfg: Any) -> TestClient:
    config = ServiceConfig(workdir=str(tmp_path / "jobs"), **cfg)
    return TestClient(create_app(config, models=models, assessor=assessor or FakeAssessor(config)))


# ------------------------------------------------------------------- reads only where the operator allowed
def test_client_stac_url_only_on_the_allow_list_and_a_path_reveals_nothing(tmp_path: Path, models) -> None:
    cfg = ServiceConfig(workdir=str(tmp_path / "jobs"), allow_stac=["stac.example.org", "127.0.0.1:8123"])
    client = _client(tmp_path, models, assessor=Assessor(cfg, models), allow_stac=cfg.allow_stac)
    point = {"point": {"lat": 46.6, "lon": 13.8, "radius_m": 300}, "date": DATE}
    existing, missing = "/etc/hostname", str(tmp_path / "no-such-file")
    answers = set()
    for url in (existing, missing, "file:///etc/hostname", "/vsicurl/http://127.0.0.1:8123/x", "http://10.0.0.1/stac"):
        r = client.post("/v1/assess", json={**point, "stac_url": url})
        assert r.status_code == 400, (url, r.text)
        answers.add(r.json()["error"])
    assert answers == {"stac_url: expected the http(s) URL of a STAC API this service allows"}
    assert client.post("/v1/assess", json={**point, "stac_url": "https://stac.example.org/v1"}).status_code == 202
    assert client.post("/v1/assess", json={**point, "stac_url": "http://127.0.0.1:8123/"}).status_code == 202
    # none by default
    default = _client(tmp_path / "d", models, assessor=Assessor(ServiceConfig(workdir=str(tmp_path / "d")), models))
    assert default.post("/v1/assess", json={**point, "stac_url": "https://stac.example.org/v1"}).status_code == 400


@pytest.mark.parametrize("kind", ["absolute", "relative", "vsicurl", "http-elsewhere"])
def test_item_hrefs_off_the_allow_list_are_never_opened(tmp_path: Path, world: dict[str, Any], kind: str) -> None:
    """A client's STAC API hands out items whose hrefs point at server files or other hosts: refused, unread."""
    with Recorder() as probe:
        href = {
            "absolute": lambda p: str(p),
            "relative": lambda p: str(Path("..") / Path(p).relative_to(Path(p).anchor)),
            "vsicurl": lambda p: f"/vsicurl/{probe.url}/{p.name}",
            "http-elsewhere": lambda p: f"{probe.url}/{p.name}",
        }[kind]
        with StacServer({"sentinel-2-l2a": [_item(world, href)]}) as url:
            cfg = ServiceConfig(workdir=str(tmp_path), allow_stac=["127.0.0.1:" + url.rsplit(":", 1)[1]])
            assessor = Assessor(cfg, (None, world["seg"], None))
            request = _request(world, stac_url=url)
            assessor.check(request)
            folder = tmp_path / "job"
            folder.mkdir()
            with pytest.raises(UserError) as err:
                assessor.run(request, folder, lambda _f, _m: None)
        assert probe.requests == []  # the server never reached the client-chosen host
    message = str(err.value)
    assert "asset href refused" in message and str(world["scene"]) not in message and "/" not in message
    assert not (folder / "scene_rgb.png").exists() and not (folder / "probability.tif").exists()


def test_the_operators_saved_item_under_the_scenes_root_is_read(tmp_path: Path, world: dict[str, Any]) -> None:
    """The positive case: an item saved under --scenes-root with relative hrefs to files under it works."""
    item = _item(world, lambda p: f"demo/{p.name}")
    (world["root"] / "item.json").write_text(json.dumps(item))
    cfg = ServiceConfig(workdir=str(tmp_path), scenes_root=str(world["root"]))
    assessor = Assessor(cfg, (None, world["seg"], None))
    request = _request(world, scene="item.json")
    assessor.check(request)
    store = JobStore(tmp_path / "jobs", assessor.run, timeout_s=120)  # in a job thread, as the service runs it
    job = store.submit(request)
    for _ in range(600):
        if store.get(job)["status"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    state = store.get(job)
    assert state["status"] == "done", state
    assert state["result"]["regions"]["features"] and (store.folder(job) / "probability.tif").is_file()
    # the same item with one href outside the root is refused
    item["assets"]["B04"]["href"] = str(tmp_path / "probability.tif")
    (world["root"] / "bad.json").write_text(json.dumps(item))
    with pytest.raises(UserError, match="asset href refused"):
        assessor.run(_request(world, scene="bad.json"), tmp_path / "x", lambda _f, _m: None)


def test_gdal_containers_and_vsi_paths_are_not_opened_for_clients(tmp_path: Path, world: dict[str, Any]) -> None:
    """A VRT saved as .tif (it opens its source files) under an allowed root: refused by the driver list."""
    secret = world["scene"] / "B04.tif"
    vrt = tmp_path / "scene.tif"
    vrt.write_text(
        '<VRTDataset rasterXSize="10" rasterYSize="10"><SRS>EPSG:32629</SRS>'
        '<GeoTransform>199980, 10, 0, 2800020, 0, -10</GeoTransform><VRTRasterBand dataType="UInt16" band="1">'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{secret}</SourceFilename><SourceBand>1</SourceBand>'
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    assert Grid.from_raster(vrt).width == 10  # GDAL opens it when nothing restricts it
    with client_reads(ClientSources(roots=(str(tmp_path),))):
        with pytest.raises(UserError) as err:
            Grid.from_raster(vrt)
        assert str(tmp_path) not in str(err.value)
        for path in (f"/vsizip/{tmp_path}/a.zip/x.tif", f"GTIFF_DIR:1:{secret}", str(secret), "s3://bucket/x.tif"):
            with pytest.raises(UserError, match="asset href refused"):
                Grid.from_raster(path)
    with pytest.raises(UserError, match="not a GeoTIFF"):
        inspect_upload(vrt)


def test_uploads_are_checked_before_any_pixel_is_read(tmp_path: Path, models, world: dict[str, Any]) -> None:
    from affine import Affine

    client = _client(tmp_path, models, max_upload_mb=1.0)
    region = json.dumps(shapely.geometry.mapping(shapely.box(13.8, 46.6, 13.81, 46.61)))
    form = {"bands": "B4,B3,B2", "date": DATE, "region": region}
    vrt = b'<VRTDataset rasterXSize="10" rasterYSize="10"></VRTDataset>'
    r = client.post("/v1/assess/upload", data=form, files={"scene": ("s.tif", vrt)})
    assert r.status_code == 400 and "not a GeoTIFF" in r.json()["error"], r.text
    t = Affine(10.0, 0, 199980.0, 0, -10.0, 2800020.0)
    many = write_tif(tmp_path / "many.tif", np.zeros((30, 4, 4), np.uint16), "EPSG:32629", t)
    r = client.post("/v1/assess/upload", data=form, files={"scene": ("s.tif", many.read_bytes())})
    assert r.status_code == 400 and "30 bands; expected 1 to 20" in r.json()["error"], r.text
    cplx = write_tif(tmp_path / "c.tif", np.zeros((3, 4, 4), np.complex64), "EPSG:32629", t)
    r = client.post("/v1/assess/upload", data=form, files={"scene": ("s.tif", cplx.read_bytes())})
    assert r.status_code == 400 and "data type complex64" in r.json()["error"], r.text
    ok = write_tif(tmp_path / "ok.tif", np.ones((3, 4, 4), np.uint16), "EPSG:32629", t)
    r = client.post("/v1/assess/upload", data=form, files={"scene": ("s.tif", ok.read_bytes())})
    assert r.status_code == 202, r.text
    assert list((tmp_path / "jobs" / ".uploads").iterdir()) == []  # nothing left from the refused ones


# ---------------------------------------------------------------------------------------- messages
def test_messages_name_request_fields_not_server_paths(tmp_path: Path, models, world: dict[str, Any]) -> None:
    images = tmp_path / "images"
    images.mkdir()
    client = _client(tmp_path, models, images_root=str(images))
    rows = _strip(_rows(2))
    rows[0]["image"] = "missing.h5"
    rows[1]["patch_b64"] = base64.b64encode(b"not an hdf5 file").decode()
    r = client.post("/v1/score", json={"regions": rows})
    assert r.status_code == 200, r.text
    notes = [s["note"] for s in r.json()["scores"]]
    assert str(tmp_path) not in r.text and "/tmp" not in r.text, notes
    assert "the images folder" in notes[0] and notes[1] == "image unreadable: patch_b64: not a readable HDF5 image file"
    # a job's error about its upload names the upload, not srv/jobs/<id>/upload.tif; no command-line flags
    folder = tmp_path / "job"
    folder.mkdir()
    from affine import Affine

    write_tif(
        folder / "upload.tif", np.ones((2, 8, 8), np.uint16), "EPSG:32629", Affine(10.0, 0, 199980, 0, -10, 2800020)
    )
    assessor = Assessor(ServiceConfig(workdir=str(tmp_path)), (None, world["seg"], None))
    request = _request(world, upload="upload.tif", bands="B4,B3,B2")
    with pytest.raises(UserError) as err:
        assessor.run(request, folder, lambda _f, _m: None)
    assert str(tmp_path) not in str(err.value) and "--" not in str(err.value), err.value
    assert "the uploaded scene" in str(err.value)
    assert client_message("give exactly one of --scene, --items or --stac-url; also --tile 3 and /srv/x/y.tif") == (
        "give exactly one of scene, stac_url or stac_url; also a server setting 3 and a server file"
    )
    assert client_message("STAC API http://127.0.0.1:9/v1/x returned HTTP 503") == (
        "STAC API http://127.0.0.1:9/v1/x returned HTTP 503"
    )


# --------------------------------------------------------------------------------------- bounded work
def _chunks(total: int, size: int = 1 << 16):
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


def test_chunked_bodies_are_counted_as_read(tmp_path: Path, models) -> None:
    client = _client(tmp_path, models, max_request_mb=1.0, max_upload_mb=1.0)
    body = iter([b'{"regions": [', *_chunks(3_000_000), b"]}"])
    r = client.post("/v1/score", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "limit of 1 MB" in r.json()["error"], r.text
    boundary = "xyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="scene"; filename="s.tif"\r\n'
        "Content-Type: image/tiff\r\n\r\nII*\x00"
    ).encode()
    upload = iter([head, *_chunks(3_000_000), f"\r\n--{boundary}--\r\n".encode()])
    r = client.post(
        "/v1/assess/upload", content=upload, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 413, r.text
    assert not (tmp_path / "jobs" / ".uploads").exists() or not list((tmp_path / "jobs" / ".uploads").iterdir())


def test_patch_shape_is_checked_before_decoding(tmp_path: Path, models) -> None:
    """A 1-2 KB gzip HDF5 holding a 2048 x 2048 x 14 image is refused from its header, without decoding."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as fh:
        fh.create_dataset("img", shape=(2048, 2048, 14), dtype="float32", chunks=(256, 256, 14), compression="gzip")
    assert len(buf.getvalue()) < 20_000
    client = _client(tmp_path, models)
    rows = _strip(_rows(1))
    rows[0]["patch_b64"] = base64.b64encode(buf.getvalue()).decode()
    t0 = time.perf_counter()
    r = client.post("/v1/score", json={"regions": rows})
    assert r.status_code == 200 and time.perf_counter() - t0 < 10
    note = r.json()["scores"][0]["note"]
    assert "patch_b64: image of shape (2048, 2048, 14); expected (H, W, 14) with H, W <= 128" in note, note
    # many small bombs of the model's size: the request's decoded total is bounded too (413 before decoding)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as fh:
        fh.create_dataset("img", shape=(128, 128, 14), dtype="float32", chunks=(128, 128, 14), compression="gzip")
    many = _strip(_rows(8))
    for row in many:
        row["patch_b64"] = base64.b64encode(buf.getvalue()).decode()
    small = _client(tmp_path / "s", models, max_decoded_mb=4.0)  # 4 patches of 0.92 MB fit, the 5th does not
    r = small.post("/v1/score", json={"regions": many})
    assert r.status_code == 413 and "decode to more than 4 MB" in r.json()["error"], r.text


def test_geometry_limits_use_true_areas() -> None:
    world_box = box([-180, -90, 180, 90])
    assert world_box.area_km2 == pytest.approx(510_065_622, rel=1e-4)  # not 0
    with pytest.raises(UserError, match="larger than the limit"):
        check_regions([world_box], 2500)
    assert circle(89.999, 10.0, 2000).area_km2 == pytest.approx(12.566, rel=2e-3)
    assert circle(-90.0, 0.0, 2000).area_km2 == pytest.approx(12.566, rel=2e-3)
    across = circle(0.0, 179.995, 1000)
    assert across.geometry.geom_type == "MultiPolygon" and across.area_km2 == pytest.approx(3.1416, rel=2e-3)
    check_regions([across], 10)
    thin = {
        "type": "Polygon",
        "coordinates": [[[179.99, 0], [-179.99, 0], [-179.99, 0.01], [179.99, 0.01], [179.99, 0]]],
    }
    region = from_geojson(thin)[0]
    assert region.area_km2 == pytest.approx(2.46, rel=0.01)  # 0.02 x 0.01 degrees, not a 360-degree band
    big = {"type": "Polygon", "coordinates": [[[179.5, 0], [-179.5, 0], [-179.5, 1], [179.5, 1], [179.5, 0]]]}
    assert from_geojson(big)[0].area_km2 == pytest.approx(12_308, rel=1e-3)
    ring = np.c_[
        np.cos(np.linspace(0, 2 * np.pi, MAX_VERTICES + 10)), np.sin(np.linspace(0, 2 * np.pi, MAX_VERTICES + 10))
    ]
    many = {"type": "Polygon", "coordinates": [(ring * 0.01).tolist()]}
    with pytest.raises(UserError, match="vertices"):
        from_geojson(many)
    zigzag = [[-179.0 if i % 2 else 179.0, -80 + i * 0.01] for i in range(2000)]
    spiky = {"type": "Polygon", "coordinates": [[*zigzag, [-179.0, 80.0], zigzag[0]]]}
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="outline of"):  # not millions of densified vertices first
        check_regions(from_geojson(spiky), 2500)
    assert time.perf_counter() - t0 < 5


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path, models) -> None:
    release = threading.Event()

    class Slow(FakeAssessor):
        def run(self, request, folder, progress):
            release.wait(10)
            return super().run(request, folder, progress)

    config = ServiceConfig(workdir=str(tmp_path / "jobs"), max_queue=2, job_timeout_s=30)
    client = TestClient(create_app(config, models=models, assessor=Slow(config)))
    body = {"bbox": [0, 0, 0.01, 0.01], "date": DATE}
    codes = []
    for _ in range(6):
        r = client.post("/v1/assess", json=body)
        codes.append(r.status_code)
        time.sleep(0.1)  # the first job starts running
    release.set()
    assert codes[:3] == [202, 202, 202] and codes[3:] == [429, 429, 429], codes
    assert int(r.headers["Retry-After"]) >= 1 and "queue is full" in r.json()["error"]


def test_stac_search_has_a_timeout_on_a_server_that_never_answers() -> None:
    from imagery.data.stac import search_items

    with Recorder(hang=True) as hung:
        t0 = time.perf_counter()
        outcome: dict[str, Any] = {}

        def go() -> None:
            try:
                search_items(hung.url, "sentinel-2-l2a", [0, 0, 1, 1], timeout_s=1.0)
            except UserError as exc:
                outcome["error"] = str(exc)

        t = threading.Thread(target=go, daemon=True)
        t.start()
        t.join(20)
        assert not t.is_alive(), "search_items still waiting on a server that never answers"
    assert "unreachable or failed" in outcome["error"] and time.perf_counter() - t0 < 10


def test_asset_reads_have_a_timeout_on_a_server_that_never_answers() -> None:
    with Recorder(hang=True) as hung:
        host = hung.url.split("//")[1]
        t0 = time.perf_counter()
        with client_reads(ClientSources(hosts=(host,), http_timeout_s=1, connect_timeout_s=1)):
            with pytest.raises(UserError, match="cannot read a raster of the scene"):
                Grid.from_raster(f"/vsicurl/{hung.url}/B04.tif")
        assert hung.requests and time.perf_counter() - t0 < 15


def test_a_timed_out_job_frees_its_worker(tmp_path: Path, world: dict[str, Any]) -> None:
    """A job on a STAC API that never answers times out and the only worker runs the next job at once."""
    with Recorder(hang=True) as hung:
        port = hung.url.rsplit(":", 1)[1]
        cfg = ServiceConfig(workdir=str(tmp_path), allow_stac=[f"127.0.0.1:{port}"], http_timeout_s=20)
        assessor = Assessor(cfg, (None, world["seg"], None))
        store = JobStore(tmp_path / "jobs", assessor.run, workers=1, timeout_s=1.0)
        stuck = store.submit(_request(world, stac_url=hung.url))
        time.sleep(0.3)  # the stuck job is running: the next job may use another function
        store.job_fn = lambda request, folder, progress: {"ok": True}
        done = store.submit(_request(world, scene="demo"))
        deadline = time.time() + 30
        while time.time() < deadline and store.get(done)["status"] in ("queued", "running"):
            time.sleep(0.2)
        assert store.get(stuck)["status"] == "failed" and "timed out" in store.get(stuck)["message"]
        assert store.get(done)["status"] == "done", store.get(done)
        assert store.get(done)["finished"] - store.get(stuck)["finished"] < 2  # not after the stuck run's 20 s
        assert hung.requests  # the stuck job did reach the hung server
        store.shutdown()


# ------------------------------------------------------------------------------ finished stays finished
def test_job_states_are_one_way_and_large_results_live_beside_job_json(tmp_path: Path) -> None:
    big = {"regions": {"type": "FeatureCollection", "features": [{"id": i, "p": [0.5] * 10} for i in range(20_000)]}}
    store = JobStore(tmp_path, lambda req, folder, progress: big, workers=1, timeout_s=5)
    job = store.submit({"x": 1})
    for _ in range(100):
        if store.get(job)["status"] == "done":
            break
        time.sleep(0.05)
    assert store.get(job)["result"] == big
    assert (store.folder(job) / "job.json").stat().st_size < 10_000 and (store.folder(job) / "result.json").is_file()
    assert not store._move(job, "failed", message="timed out after 60 s")  # done stays done
    assert store.get(job)["status"] == "done"

    def slow(req, folder, progress):
        time.sleep(0.6)
        progress(0.5, "late")  # the run is told to stop: this raises, nothing it does changes the job
        return {"late": True}

    store2 = JobStore(tmp_path / "b", slow, workers=1, timeout_s=0.2)
    late = store2.submit({})
    time.sleep(1.2)
    state = store2.get(late)
    assert state["status"] == "failed" and state["message"] == "timed out after 0.2 s" and "result" not in state
    # a timed-out run stops at its next loop check (common.cancel), it does not run on in the background
    stopped = threading.Event()

    def endless(req, folder, progress):
        try:
            while True:
                check_cancelled()
                time.sleep(0.01)
        finally:
            stopped.set()

    store4 = JobStore(tmp_path / "e", endless, workers=1, timeout_s=0.2)
    endless_id = store4.submit({})
    assert stopped.wait(5)
    for _ in range(100):  # the worker writes the end state just after the run's own clean-up
        if store4.get(endless_id)["status"] != "running":
            break
        time.sleep(0.05)
    assert store4.get(endless_id)["status"] == "failed"
    # a restart marks unfinished jobs interrupted; finished ones stay as they were
    folder = tmp_path / "c"
    (folder / ("a" * 32)).mkdir(parents=True)
    (folder / ("a" * 32) / "job.json").write_text(json.dumps({"id": "a" * 32, "status": "running"}))
    (folder / ("b" * 32)).mkdir()
    (folder / ("b" * 32) / "job.json").write_text(json.dumps({"id": "b" * 32, "status": "failed", "message": "x"}))
    store3 = JobStore(folder, slow)
    assert store3.get("a" * 32)["status"] == "interrupted" and store3.get("b" * 32)["message"] == "x"
    with pytest.raises(QueueFull):
        JobStore(tmp_path / "d", slow, max_queue=0).submit({})


def test_serve_on_a_port_in_use_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    from pipelines import serve

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = run_main(serve.main, ["--imagery-model", str(tmp_path / "m"), "--port", str(port)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"--port {port}: cannot listen" in err, err


def test_report_pages_carry_a_content_security_policy(tmp_path: Path, models) -> None:
    class Reporting(FakeAssessor):
        def run(self, request, folder, progress):
            (folder / "report.html").write_text(
                "<html><script>var a = 1;</script><img src=x onerror=alert(1)><script>var b = 2;</script></html>"
            )
            return {}

    config = ServiceConfig(workdir=str(tmp_path / "jobs"))
    client = TestClient(create_app(config, models=models, assessor=Reporting(config)))
    job = client.post("/v1/assess", json={"bbox": [0, 0, 0.01, 0.01], "date": DATE}).json()["job_id"]
    for _ in range(50):
        if client.get(f"/v1/jobs/{job}").json()["status"] == "done":
            break
        time.sleep(0.1)
    r = client.get(f"/v1/jobs/{job}/files/report.html")
    csp = r.headers["Content-Security-Policy"]
    script_src = next(p for p in csp.split("; ") if p.startswith("script-src"))
    assert script_src.count("'sha256-") == 2 and "unsafe-inline" not in script_src and "default-src 'none'" in csp
    for page in (r, client.get("/"), client.get("/healthz"), client.post("/v1/assess", json={})):
        assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Referrer-Policy"] == "no-referrer"


# -------------------------------------------------------------------------------------- nonsense values
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"point": {"lat": 46.6, "lon": 13.8, "radius_m": "Infinity"}}, "point.radius_m inf"),
        ({"point": {"lat": 46.6, "lon": 13.8, "radius_m": 1e-9}}, "point.radius_m 1e-09"),
        ({"date": "0001-01-05"}, "no Sentinel-2 imagery before 2015-06-23"),
        ({"days_before": -5}, "days_before"),
        ({"scene": ""}, "scene: empty name"),
    ],
)
def test_nonsense_values_are_4xx(tmp_path: Path, models, change: dict[str, Any], message: str) -> None:
    client = _client(tmp_path, models)
    body = {"point": {"lat": 46.6, "lon": 13.8, "radius_m": 300}, "date": DATE, **change}
    text = json.dumps(body).replace('"Infinity"', "Infinity")
    r = client.post("/v1/assess", content=text, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 and message in r.json()["error"], r.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date", "0001-01-05"], "--date 0001-01-05: no Sentinel-2 imagery before"),
        (["--radius-m", "inf"], "--radius-m inf: expected a radius"),
        (["--radius-m", "1e-9"], "--radius-m 1e-09: expected a radius"),
        (["--days-before", "-5"], "--days-before -5: expected 0 to 365 days"),
        (["--scene", ""], "--scene: empty name"),
    ],
)
def test_the_command_refuses_what_the_api_refuses(tmp_path: Path, tracking_uri: str, capsys, args, message) -> None:
    from pipelines import assess

    base = {"--lat": "46.6", "--lon": "13.8", "--date": DATE, "--scene": str(tmp_path)}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    argv = [x for kv in base.items() for x in kv]
    argv += ["--imagery-model", str(tmp_path / "m"), "--out", str(tmp_path / "out"), "--tracking-uri", tracking_uri]
    assert run_main(assess.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()
