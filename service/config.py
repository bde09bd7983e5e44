"""Typed configuration of the HTTP service (``python -m pipelines.serve``), logged whole to MLflow."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from imagery.change.defaults import MAX_CLOUD, POST_DAYS, PRE_DAYS
from imagery.data.bands import DEFAULT_COLLECTION
from imagery.inference.config import DEFAULT_BATCH, DEFAULT_OVERLAP

ENV_API_KEY = "LANDSLIDE_API_KEY"


@dataclass
class ServiceConfig:
    """Models (URIs or paths; ``None`` = not used), where jobs live, and the limits of the API.

    Limits: ``max_batch`` regions per ``/v1/score`` request, ``max_request_mb`` per request body,
    ``max_decoded_mb`` for the decoded inline patches of one ``/v1/score`` request (float32),
    ``max_area_km2`` per assessed region (true area), ``job_timeout_s`` per ``/v1/assess`` job and
    ``workers`` jobs at a time (further jobs wait in the queue). ``images_root``: the only folder whose
    files ``/v1/score`` may read by path (``None``: paths are refused; send the patch inline).
    ``dem`` and ``factors`` (``NAME=path`` per factor raster) serve every ``/v1/assess`` job; without the
    factors the tabular model needs, jobs use the imagery alone (each region says so).
    ``api_key``: required in the ``X-API-Key`` header when set (else ``$LANDSLIDE_API_KEY``).

    What clients may make the service read (README "Security"): ``allow_stac``: hosts (``host`` or
    ``host:port``) whose STAC APIs and asset hrefs a request's ``stac_url`` may use (none by default);
    ``stac_url``: the operator's STAC API, used by requests that name no scene (its host is allowed).
    Uploads: at most ``max_upload_mb`` MB, ``max_upload_bands`` bands, ``max_upload_pixels`` pixels a band.
    ``max_queue`` jobs wait at most (then 429); ``http_timeout_s`` bounds every outbound request of a job.
    """

    tabular_model: str | None = None
    imagery_model: str | None = None
    fusion_model: str | None = None
    runtime: str = "auto"
    workdir: str = "serve_jobs"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)
    images_root: str | None = None
    scenes_root: str | None = None
    dem: str | None = None
    factors: list[str] = field(default_factory=list)
    max_batch: int = 1024
    max_request_mb: float = 32.0
    max_decoded_mb: float = 256.0
    max_area_km2: float = 2500.0
    job_timeout_s: float = 1800.0
    workers: int = 1
    max_queue: int = 32
    allow_stac: list[str] = field(default_factory=list)
    stac_url: str | None = None
    max_upload_mb: float = 512.0
    max_upload_bands: int = 20
    max_upload_pixels: int = 100_000_000
    http_timeout_s: float = 30.0
    seed: int = 42

    def stac_hosts(self) -> list[str]:
        """The hosts a client's ``stac_url`` and its items' asset hrefs may be on (``allow_stac`` + ``stac_url``'s)."""
        hosts = [h.strip().lower() for h in self.allow_stac if h.strip()]
        if self.stac_url:
            parts = urlsplit(self.stac_url)
            if parts.hostname:
                hosts += [parts.hostname.lower()] + ([f"{parts.hostname.lower()}:{parts.port}"] if parts.port else [])
        return hosts

    def key(self) -> str | None:
        """The API key in force (the flag, else the environment variable), or ``None``."""
        return self.api_key or os.environ.get(ENV_API_KEY) or None


@dataclass
class AssessConfig:
    """``python -m pipelines.assess``: regions, date, scene source, rasters, models, output, options.

    Regions: one of ``regions`` (vector file), ``lat``/``lon``/``radius_m``, ``bbox`` (W S E N) or
    ``region_geojson``. Scene: one of ``scene``, ``items`` (saved STAC items) or ``stac_url``.
    ``factors``: ``NAME=path`` or ``path`` (name = file stem) per factor raster. ``missing_factors``:
    when the tabular model needs a factor no raster gives, ``"error"`` (the command) or ``"imagery"``
    (the service: no tabular evidence, each region marked, fusion falls back to the imagery).
    ``policy``: the decision policy; ``None``: the models' default (:meth:`fusion.models.Models.default_policy`).
    ``event_date`` (YYYY-MM-DD, ``None``: none): adds the change evidence, composites of the items of
    ``[event - pre_days, event)`` and ``(event, min(event + post_days, date)]`` with ``eo:cloud_cover`` at most
    ``change_max_cloud`` (from ``items`` or ``stac_url``, as ``map_event`` takes them) and the slope of ``dem``.
    """

    date: str = ""
    regions: str | None = None
    lat: float | None = None
    lon: float | None = None
    radius_m: float = 500.0
    bbox: list[float] | None = None
    region_geojson: dict[str, Any] | None = None
    days_before: int = 30
    scene: str | None = None
    bands: list[str] | None = None
    items: str | None = None
    stac_url: str | None = None
    collection: str = DEFAULT_COLLECTION
    max_cloud: float = 20.0
    dem: str | None = None
    factors: list[str] = field(default_factory=list)
    tabular_model: str | None = None
    imagery_model: str | None = None
    fusion_model: str | None = None
    out: str = "assess_out"
    policy: str | None = None
    runtime: str = "auto"
    device: str = "auto"
    threshold: float | None = None
    min_area_m2: float = 500.0
    margin_m: float = 200.0
    tile: int = 128
    overlap: int = DEFAULT_OVERLAP
    batch_size: int = DEFAULT_BATCH
    allow_resolution_mismatch: bool = False
    max_area_km2: float = 2500.0
    http_timeout_s: float = 60.0
    missing_factors: str = "error"
    progress: bool = True
    seed: int = 42
    event_date: str | None = None
    pre_days: int = PRE_DAYS
    post_days: int = POST_DAYS
    change_max_cloud: float = MAX_CLOUD
