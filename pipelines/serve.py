"""``python -m pipelines.serve``: the HTTP API and map page (FastAPI + uvicorn) on the given models.

Models are loaded once at start. ``--host`` defaults to 127.0.0.1 (this machine only); serving to a
network needs ``--host 0.0.0.0`` and, sensibly, ``--api-key`` (or ``$LANDSLIDE_API_KEY``): requests to
``/v1/*`` must then carry it in the ``X-API-Key`` header (the header only, never the URL). A request's
``stac_url`` must be on ``--allow-stac HOST...`` (or ``--stac-url``'s host; none by default), and so must the
asset hrefs of the items found there (README "Security"). A port already in use is a one-line error.
Finished ``/v1/assess`` jobs stay under
``--workdir`` across restarts. OpenAPI docs: ``http://HOST:PORT/docs``.

Example::

    python -m pipelines.serve --tabular-model runs:/<tab>/model --imagery-model runs:/<img> \\
        --fusion-model runs:/<fus>/fuser.json --scenes-root scenes/ --dem dem.tif \\
        --factors slope_deg=factors/slope_deg.tif ... --port 8000
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from common.cli import InputNotFoundError, RunOptions, UserError, positive_int
from common.options import arg, fill, nested
from pipelines._command import Command, Context
from pipelines._segmenter_args import EngineOptions
from service.config import ServiceConfig

_D = ServiceConfig()


@dataclass
class LimitOptions:
    """limits"""

    max_batch: int = arg("regions per /v1/score request", default=_D.max_batch, type=positive_int)
    max_area_km2: float = arg("largest region /v1/assess takes", default=_D.max_area_km2)
    max_request_mb: float = arg("largest request body", default=_D.max_request_mb)
    max_decoded_mb: float = arg("decoded inline patches per /v1/score request", default=_D.max_decoded_mb)
    job_timeout: float = arg("seconds an assess job may run", default=_D.job_timeout_s)
    workers: int = arg("assess jobs run at a time", default=_D.workers, type=positive_int)
    max_queue: int = arg("assess jobs waiting (then 429)", default=_D.max_queue, type=positive_int)
    max_upload_mb: float = arg("largest uploaded scene", default=_D.max_upload_mb)
    http_timeout: float = arg("seconds per outbound request", default=_D.http_timeout_s)


@dataclass
class ServeOptions:
    """The flags of ``python -m pipelines.serve``."""

    tabular_model: str | None = arg("tabular model URI (runs:/<id>/model, run id or folder)", default=None)
    imagery_model: str | None = arg("segmenter URI (runs:/<id>, folder or .onnx)", default=None)
    fusion_model: str | None = arg("fuser URI (runs:/<id>/fuser.json, run id or JSON path)", default=None)
    host: str = arg("interface to listen on (default %(default)s: this machine only)", default=_D.host)
    port: int = arg("port to listen on", default=_D.port, type=positive_int)
    workdir: str = arg("where assess jobs and their outputs are kept", default=_D.workdir)
    api_key: str | None = arg("require this X-API-Key (default: $LANDSLIDE_API_KEY, else none)", default=None)
    images_root: str | None = arg("folder /v1/score may read patches from by path", default=None)
    scenes_root: str | None = arg("folder of scenes /v1/assess may use by name", default=None)
    dem: str | None = arg("DEM for /v1/assess jobs (when the imagery model uses slope/DEM)", default=None)
    factors: list[str] = arg("factor rasters for /v1/assess jobs", default_factory=list, nargs="+", metavar="NAME=PATH")
    stac_url: str | None = arg("STAC API for requests that name no scene (its host is allowed)", default=None)
    allow_stac: list[str] = arg(
        "hosts (or host:port) of STAC APIs and assets", default_factory=list, nargs="+", metavar="HOST"
    )
    engine: EngineOptions = nested(EngineOptions)
    limits: LimitOptions = nested(LimitOptions)
    run: RunOptions = nested(RunOptions)


def check_port(host: str, port: int) -> None:
    """Refuse a port already in use on ``host`` (one-line :class:`UserError`), before "serving on" is printed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        raise UserError(f"--host {host}: not an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(address)
        except OSError as exc:
            message = f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); choose another port"
            raise UserError(message) from None


def service_config(o: ServeOptions, ctx: Context) -> ServiceConfig:
    """The service's config: each model named, or the registered ``@champion`` when none is named."""
    from common.tracking import setup_tracking  # noqa: PLC0415 - mlflow: loaded when the command runs
    from pipelines._register import model_or_champion  # noqa: PLC0415 - mlflow: loaded when the command runs

    setup_tracking(o.run.tracking_uri, verbose=o.run.verbose)
    models = {"tabular_model": o.tabular_model, "imagery_model": o.imagery_model, "fusion_model": o.fusion_model}
    none_named = all(v is None for v in models.values())
    for field, kind in (("tabular_model", "tabular"), ("imagery_model", "imagery"), ("fusion_model", "fusion")):
        if models[field] is not None or none_named:  # no model named: the registered @champion of each kind
            models[field] = model_or_champion(models[field], kind, f"--{field.replace('_', '-')}", required=False)
    if models["tabular_model"] is None and models["imagery_model"] is None:
        raise UserError(
            "give --tabular-model, --imagery-model or both (or promote registered models to @champion: "
            "python -m pipelines.promote landslide-imagery VERSION --alias champion)"
        )
    return fill(
        ServiceConfig,
        o,
        o.limits,
        o.run,
        **models,
        runtime=o.engine.spec(),
        factors=list(o.factors),
        allow_stac=list(o.allow_stac),
        job_timeout_s=o.limits.job_timeout,
        http_timeout_s=o.limits.http_timeout,
    )


def serve(o: ServeOptions, ctx: Context) -> None:
    """Check the port and the rasters, load the models, serve until Ctrl-C."""
    import uvicorn  # noqa: PLC0415 - the server only when serving (keeps --help fast)

    from service.api import create_app  # noqa: PLC0415 - loads torch and the models
    from service.assess import factor_sources  # noqa: PLC0415 - with the service

    cfg: ServiceConfig = ctx.config
    check_port(cfg.host, cfg.port)  # before loading models: one line, exit 2
    factor_sources(cfg.factors)  # one-line errors for missing rasters now, not in every job
    if cfg.dem and not Path(cfg.dem).is_file():
        raise InputNotFoundError(f"--dem {cfg.dem}: not found")
    app = create_app(cfg)
    check_port(cfg.host, cfg.port)  # still free after loading the models
    print(f"serving on http://{cfg.host}:{cfg.port}/ (docs: /docs); Ctrl-C to stop", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning" if not o.run.verbose else "info")
    return None


COMMAND = Command("serve", ServeOptions, serve, doc=__doc__, prepare=service_config)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
