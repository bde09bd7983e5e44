"""The HTTP API and its map page (FastAPI). Started by ``python -m pipelines.serve``.

Endpoints (JSON in and out; errors are ``{"error": "<one line>"}`` with a 4xx status, never a traceback):

* ``GET /healthz``: liveness and which models are loaded.
* ``POST /v1/score``: up to ``max_batch`` region rows (the tabular model's feature columns, a
  ``region_id``, optionally an image: ``patch_b64`` = base64 of an L4S ``image_N.h5`` file, or ``image``
  = a path under the server's ``--images`` folder) to scores, synchronously (:mod:`fusion.scoring`).
* ``POST /v1/assess``: a region (GeoJSON, a point + radius, or a box) and a date; returns a job id at once.
  ``POST /v1/assess/upload``: the same with an uploaded multi-band GeoTIFF scene.
  ``GET /v1/jobs/{id}``: status, progress, and when done the regions and landslide polygons as GeoJSON
  and links to the files; ``GET /v1/jobs/{id}/files/{name}``: one output file.
* ``POST /v1/regions``: an uploaded GeoJSON or GeoPackage of region polygons (any CRS for a GeoPackage) to
  the GeoJSON ``region`` (EPSG:4326, one feature per region, ids kept) that ``/v1/assess`` takes, checked.
* ``GET /v1/scenes``: the scenes under ``--scenes-root`` (name, date, bounds) and whether the service
  searches a STAC API (``stac_search``: it was started with ``--stac-url``); ``GET /v1/scenes/{name}/quicklook.png``:
  the scene's true colour over those bounds (EPSG:4326, at most 512 px a side), made once.
* ``GET /``: the map page (Leaflet, served by the app: no CDN); ``GET /docs`` and ``GET /redoc``: the API's
  docs, whose Swagger UI and ReDoc files the app serves from the ``fastapi-offline`` package (no CDN, so the
  docs open offline); ``GET /openapi.json``: the schema.

``X-API-Key`` is required on ``/v1/*`` when the service has a key, in the header only (never the URL, which
logs and proxies record); it is compared in constant time. Request bodies are counted as they are read
(413 past the limit), a full job queue answers 429 with ``Retry-After``, error messages name request fields,
never server paths (:mod:`service.security`), and reports carry a Content-Security-Policy.
"""

from __future__ import annotations

import hmac
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, ValidationError

from common.errors import UserError
from common.geo import inspect_upload
from fusion.models import Models
from fusion.regions import ID_COLUMN, validate_region_table
from fusion.scoring import RegionScorer
from imagery.change.defaults import MAX_CLOUD, POST_DAYS, PRE_DAYS
from imagery.data import read_image
from service.config import ServiceConfig
from service.errors import ApiError, install_error_handlers
from service.errors import error_response as _error
from service.jobs import JobStore, QueueFull
from service.regions import API_NAMES, check_values, parse_date
from service.security import (
    BodyLimit,
    BodyTooLarge,
    DecodedTooLarge,
    SecurityHeaders,
    client_message,
    decode_patch,
    report_csp,
)

STATIC = Path(__file__).resolve().parent / "static"
OUTPUT_FILES = (
    "regions.geojson",
    "regions.gpkg",
    "landslides.geojson",
    "probability.tif",
    "report.html",
    "report.json",
    "overview.png",
    "scene_rgb.png",
)


class ScoreRequest(BaseModel):
    """``regions``: one object per region: ``region_id``, the tabular features, optionally ``image``
    (a path under the server's images folder) or ``patch_b64`` (an L4S ``image_N.h5`` file, base64)."""

    regions: list[dict[str, Any]] = Field(min_length=1)


class PointRadius(BaseModel):
    lat: float
    lon: float
    radius_m: float = 500.0


class AssessRequest(BaseModel):
    """One of ``region`` (GeoJSON Feature, FeatureCollection or geometry, EPSG:4326), ``point`` or ``bbox``
    (W, S, E N in degrees); the ``date`` (YYYY-MM-DD) and ``days_before`` it to search imagery; the
    scene: ``scene`` (a name under the server's scenes folder) or ``stac_url``. ``event_date`` (optional,
    YYYY-MM-DD, from 2015-06-23 to before ``date``) adds the change evidence of the windows ``pre_days``
    before and ``post_days`` after it (``scene`` then names a saved item collection, or ``stac_url`` is searched)
    from the items whose ``eo:cloud_cover`` is at most ``change_max_cloud`` percent (0..100, ``map_event``'s
    ``--max-cloud`` default)."""

    region: dict[str, Any] | None = None
    point: PointRadius | None = None
    bbox: list[float] | None = None
    date: str
    days_before: int = Field(default=30, ge=0, le=365)
    scene: str | None = None
    stac_url: str | None = None
    event_date: str | None = None
    pre_days: int = Field(default=PRE_DAYS, ge=1, le=365)
    post_days: int = Field(default=POST_DAYS, ge=1, le=365)
    change_max_cloud: float = Field(default=MAX_CLOUD, ge=0, le=100)


def _check_event_date(text: str | None) -> None:
    """An ``event_date`` in the future or before Sentinel-2 is a 422 (the request cannot be valid)."""
    if text is not None:
        try:
            parse_date(text, "event_date")
        except UserError as exc:
            raise ApiError(422, str(exc)) from None


class Assessor(Protocol):
    """What runs ``/v1/assess``: checks a request at once, runs it as a job, lists the server's scenes."""

    def check(self, request: dict[str, Any]) -> None: ...

    def run(self, request: dict[str, Any], folder: Path, progress: Callable[[float, str], None]) -> dict[str, Any]: ...

    def scenes(self) -> list[dict[str, Any]]: ...


def create_app(
    cfg: ServiceConfig, *, models: Models | tuple[Any, Any, Any] | None = None, assessor: Assessor | None = None
) -> FastAPI:
    """The application: models loaded once (``models``: :class:`fusion.models.Models` or ``(tabular, segmenter,
    fuser)``, else from ``cfg``);
    ``assessor`` runs ``/v1/assess`` (default :class:`service.assess.Assessor`)."""
    if models is None:  # models load once, at start
        models = Models.load(cfg.tabular_model, cfg.imagery_model, cfg.fusion_model, runtime=cfg.runtime)
    models = Models.of(models)
    tab, seg, fus = models
    scorer = RegionScorer.of(models)  # once, at start; the models' default policy, as /v1/assess jobs
    if assessor is None:
        from service.assess import Assessor as SceneAssessor  # noqa: PLC0415 - scene machinery only when serving

        assessor = SceneAssessor(cfg, models)
    store = JobStore(
        cfg.workdir, assessor.run, workers=cfg.workers, timeout_s=cfg.job_timeout_s, max_queue=cfg.max_queue
    )
    key = cfg.key()
    labels = server_labels(cfg)
    app = FastAPIOffline(  # /docs and /redoc from the package's files, not a CDN; no online validator badge
        title="Landslide detection",
        version="1",
        description=__doc__.split("\n\n")[0],
        static_url="/docs-static",
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.store, app.state.scorer = store, scorer
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(SecurityHeaders)
    app.add_middleware(
        BodyLimit, limit_mb=lambda path: cfg.max_upload_mb if path == "/v1/assess/upload" else cfg.max_request_mb
    )

    install_error_handlers(app)  # one table from exception to status: service.errors

    @app.exception_handler(UserError)  # the table's 400; its message without server paths (service.security)
    async def _user_error(_: Request, exc: UserError) -> JSONResponse:
        return _error(400, client_message(exc, labels))

    @app.exception_handler(QueueFull)  # 429 with Retry-After
    async def _queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        response = _error(429, f"the job queue is full: {exc}")
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    def authorized(x_api_key: Annotated[str | None, Header()] = None) -> None:
        given = x_api_key or ""  # the header only: a key in the URL ends up in logs, proxies and history
        if key is not None and not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(401, "missing or wrong X-API-Key")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "models": {"tabular": tab is not None, "imagery": seg is not None, "fusion": fus is not None},
        }

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.post("/v1/score", dependencies=[Depends(authorized)])
    def score(req: ScoreRequest) -> dict[str, Any]:
        if len(req.regions) > cfg.max_batch:
            raise ApiError(413, f"{len(req.regions)} regions in one request; the limit is {cfg.max_batch}")
        return {"scores": score_rows(req.regions, scorer, cfg, labels)}

    @app.get("/v1/scenes", dependencies=[Depends(authorized)])
    def scenes() -> dict[str, Any]:
        return {"scenes": assessor.scenes(), "stac_search": bool(cfg.stac_url)}

    @app.get("/v1/scenes/{name}/quicklook.png", dependencies=[Depends(authorized)])
    def scene_quicklook(name: str) -> FileResponse:
        make = getattr(assessor, "quicklook", None)  # an assessor without scenes of its own has none
        if make is None:
            raise ApiError(404, f"no quick-look for scene {name!r}")
        return FileResponse(make(name, store.root / ".quicklooks"), media_type="image/png")

    @app.post("/v1/regions", dependencies=[Depends(authorized)])
    async def regions_upload(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        data = await file.read()
        return {"region": uploaded_regions(data, store.root / ".uploads", cfg.max_area_km2)}

    @app.post("/v1/assess", dependencies=[Depends(authorized)], status_code=202)
    def assess_json(req: AssessRequest) -> dict[str, str]:
        radius = req.point.radius_m if req.point is not None else None
        check_values(date=req.date, days_before=req.days_before, radius_m=radius, scene=req.scene, names=API_NAMES)
        _check_event_date(req.event_date)
        request = req.model_dump()
        assessor.check(request)
        return {"job_id": store.submit(request)}

    @app.post("/v1/assess/upload", dependencies=[Depends(authorized)], status_code=202)
    async def assess_upload(
        scene: Annotated[UploadFile, File()],
        bands: Annotated[str, Form()],
        date: Annotated[str, Form()],
        region: Annotated[str, Form()] = "",
        event_date: Annotated[str | None, Form()] = None,
    ) -> dict[str, str]:
        check_values(date=date, days_before=30, names=API_NAMES)
        _check_event_date(event_date)
        try:
            geo = json.loads(region) if region else None
        except ValueError:
            raise ApiError(400, "region: not valid GeoJSON") from None
        try:
            form = AssessRequest(region=geo, date=date, event_date=event_date)
        except ValidationError as exc:  # a 422 like the JSON endpoint's, not a 500
            raise RequestValidationError(exc.errors()) from None
        request = {**form.model_dump(), "bands": bands, "upload": "upload.tif"}
        assessor.check(request)
        staged = await _save_upload(scene, store.root / ".uploads", cfg.max_upload_mb)
        try:
            inspect_upload(staged, what="scene", max_bands=cfg.max_upload_bands, max_pixels=cfg.max_upload_pixels)
            return {"job_id": store.submit(request, files={"upload.tif": staged})}
        finally:
            staged.unlink(missing_ok=True)

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(authorized)])
    def job(job_id: str) -> dict[str, Any]:
        state = store.get(job_id)
        if state is None:
            raise ApiError(404, f"unknown job {job_id}")
        state = {k: v for k, v in state.items() if k != "request"}
        folder = store.folder(job_id)
        state["files"] = {n: f"/v1/jobs/{job_id}/files/{n}" for n in OUTPUT_FILES if (folder / n).is_file()}
        return state

    @app.get("/v1/jobs/{job_id}/files/{name}", dependencies=[Depends(authorized)])
    def job_file(job_id: str, name: str) -> FileResponse:
        if store.get(job_id) is None:
            raise ApiError(404, f"unknown job {job_id}")
        path = store.folder(job_id) / name
        if name not in OUTPUT_FILES or not path.is_file():
            raise ApiError(404, f"job {job_id} has no file {name!r}")
        headers = {"X-Content-Type-Options": "nosniff"}
        if name.endswith(".html"):  # a report runs only its own scripts, on the API's origin
            headers["Content-Security-Policy"] = report_csp(path.read_bytes())
        return FileResponse(path, headers=headers)

    @app.on_event("shutdown")
    def _stop() -> None:
        store.shutdown()

    return app


def server_labels(cfg: ServiceConfig) -> dict[str, str]:
    """The service's folders as a client knows them, for :func:`service.security.client_message`."""
    folders = {cfg.images_root: "the images folder", cfg.scenes_root: "the scenes folder", cfg.workdir: "a job folder"}
    out: dict[str, str] = {}
    for folder, label in folders.items():
        if folder:  # absolute forms only: a relative name could be an ordinary word of a message
            out[os.path.abspath(folder)] = label
            out[os.path.realpath(folder)] = label
    return out


def uploaded_regions(data: bytes, folder: Path, max_area_km2: float) -> dict[str, Any]:
    """The regions of an uploaded GeoJSON (EPSG:4326, read without GDAL) or GeoPackage (any CRS; recognised by
    its SQLite header and ``GPKG`` application id before GDAL opens it) as a GeoJSON FeatureCollection in
    EPSG:4326 with a ``region_id`` per feature, checked like an ``/v1/assess`` request's regions."""
    import shapely.geometry  # noqa: PLC0415 - only for this endpoint

    from service.regions import check_regions, from_geojson, read_regions  # noqa: PLC0415

    if data[:16] == b"SQLite format 3\x00" and data[68:72] == b"GPKG":
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{uuid.uuid4().hex}.gpkg"
        try:
            path.write_bytes(data)
            try:
                regions = read_regions(path)
            except UserError:
                raise UserError("file: a GeoPackage without readable region polygons") from None
        finally:
            path.unlink(missing_ok=True)
    else:
        try:
            obj = json.loads(data)
        except ValueError:
            raise UserError("file: expected a GeoJSON or GeoPackage of region polygons") from None
        regions = from_geojson(obj)
    fc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": shapely.geometry.mapping(r.geometry), "properties": {"region_id": r.id}}
            for r in regions
        ],
    }
    check_regions(from_geojson(fc), max_area_km2)  # the vertex limit too, as /v1/assess will see them
    return fc


async def _save_upload(upload: UploadFile, folder: Path, limit_mb: float) -> Path:
    """The uploaded file copied to ``folder`` in chunks, counted: past ``limit_mb`` MB a 413 and nothing kept."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.tif"
    seen = 0
    try:
        with path.open("wb") as fh:
            while chunk := await upload.read(1 << 20):
                seen += len(chunk)
                if seen > limit_mb * 1e6:
                    raise BodyTooLarge(limit_mb)
                fh.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def score_rows(
    rows: list[dict[str, Any]], scorer: RegionScorer, cfg: ServiceConfig, labels: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Score region rows with the service's scorer (see :class:`ScoreRequest`); one output dict per row."""
    table = validate_region_table(pd.DataFrame(rows), "request")
    max_side = int(getattr(getattr(scorer.segmenter, "meta", None), "patch_size", 128) or 128)
    images, has, notes = (
        _request_images(rows, table, cfg, max_side, labels or {})
        if scorer.segmenter is not None
        else (None, None, None)
    )
    scorer.check_table(table, "request")
    out = scorer.score_batch(table, images, has, notes, None).drop(columns=["mask_path"])
    out = out.astype(object).where(out.notna(), None)
    return out.to_dict(orient="records")


def _request_images(
    rows: list[dict[str, Any]], table: pd.DataFrame, cfg: ServiceConfig, max_side: int, labels: dict[str, str]
) -> tuple[np.ndarray | None, np.ndarray, list[str]]:
    """Read each row's patch (inline base64 L4S file, or a path under ``images_root``); an inline patch's shape
    is checked before its data are read: at most ``max_side`` pixels a side (the model's patch size)."""
    root = Path(cfg.images_root).resolve() if cfg.images_root else None
    arrays, has, notes = [], np.zeros(len(rows), bool), [""] * len(rows)
    budget = int(cfg.max_decoded_mb * 1e6)  # decoded float32 bytes of all inline patches of the request
    for i, row in enumerate(rows):
        rid = table[ID_COLUMN].iloc[i]
        try:
            if row.get("patch_b64"):
                img = decode_patch(row["patch_b64"], max_side=max_side, max_bytes=budget)
                budget -= img.nbytes
            elif row.get("image"):
                path = Path(str(row["image"]))
                path = (root / path if root and not path.is_absolute() else path).resolve()
                if root is None or not path.is_relative_to(root):
                    raise ApiError(400, f"region {rid}: image paths must lie under the server's images folder")
                img = read_image(path)
            else:
                notes[i] = "no image for this region"
                continue
        except DecodedTooLarge:
            raise ApiError(413, f"the request's patches decode to more than {cfg.max_decoded_mb:g} MB") from None
        except (UserError, ValueError) as exc:
            notes[i] = f"image unreadable: {client_message(exc, labels)}"
            continue
        if not np.isfinite(img).any():
            notes[i] = "imagery missing: the patch has no finite values"
            continue
        if arrays and img.shape != arrays[0].shape:
            raise ApiError(400, f"region {rid}: patch shape {img.shape}, expected {arrays[0].shape} like the others")
        arrays.append(img)
        has[i] = True
    return (np.stack(arrays) if arrays else None), has, notes
