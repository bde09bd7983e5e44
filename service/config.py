"""Typed configuration of the HTTP service (``python -m pipelines.serve``), logged whole to MLflow."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

ENV_API_KEY = "LANDSLIDE_API_KEY"


@dataclass
class ServiceConfig:
    """Models (URIs or paths; ``None`` = not used), where jobs live, and the limits of the API.

    Limits: ``max_batch`` regions per ``/v1/score`` request, ``max_request_mb`` per request body,
    ``max_area_km2`` per assessed region (true area), ``job_timeout_s`` per ``/v1/assess`` job and
    ``workers`` jobs at a time (further jobs wait in the queue). ``images_root``: the only folder whose
    files ``/v1/score`` may read by path (``None``: paths are refused; send the patch inline).
    ``dem`` and ``factors`` (``NAME=path`` per factor raster) serve every ``/v1/assess`` job; without the
    factors the tabular model needs, jobs use the imagery alone (each region says so).
    ``api_key``: required in the ``X-API-Key`` header when set (else ``$LANDSLIDE_API_KEY``).
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
    max_area_km2: float = 2500.0
    job_timeout_s: float = 1800.0
    workers: int = 1
    seed: int = 42

    def key(self) -> str | None:
        """The API key in force (the flag, else the environment variable), or ``None``."""
        return self.api_key or os.environ.get(ENV_API_KEY) or None
