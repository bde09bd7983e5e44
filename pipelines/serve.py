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

import argparse
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import InputNotFoundError, UserError, add_common_args, positive_int, run_main
from common.seed import seed_everything
from common.tracking import setup_tracking
from pipelines._register import model_or_champion
from service.config import ServiceConfig


def build_parser() -> argparse.ArgumentParser:
    d = ServiceConfig()
    p = argparse.ArgumentParser(prog="python -m pipelines.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--tabular-model", default=None, help="tabular model URI (runs:/<id>/model, run id or folder)")
    p.add_argument("--imagery-model", default=None, help="segmenter URI (runs:/<id>, folder or .onnx)")
    p.add_argument("--fusion-model", default=None, help="fuser URI (runs:/<id>/fuser.json, run id or JSON path)")
    p.add_argument("--runtime", choices=("torch", "onnx"), default=d.runtime, help="segmenter runtime")
    p.add_argument("--host", default=d.host, help="interface to listen on (default %(default)s: this machine only)")
    p.add_argument("--port", type=positive_int, default=d.port)
    p.add_argument("--workdir", default=d.workdir, help="where assess jobs and their outputs are kept")
    p.add_argument("--api-key", default=None, help="require this X-API-Key (default: $LANDSLIDE_API_KEY, else none)")
    p.add_argument("--images-root", default=None, help="folder /v1/score may read patches from by path")
    p.add_argument("--scenes-root", default=None, help="folder of scenes /v1/assess may use by name")
    p.add_argument("--dem", default=None, help="DEM for /v1/assess jobs (when the imagery model uses slope/DEM)")
    p.add_argument("--factors", nargs="+", default=[], metavar="NAME=PATH", help="factor rasters for /v1/assess jobs")
    p.add_argument("--max-batch", type=positive_int, default=d.max_batch, help="regions per /v1/score request")
    p.add_argument("--max-area-km2", type=float, default=d.max_area_km2, help="largest region /v1/assess takes")
    p.add_argument("--max-request-mb", type=float, default=d.max_request_mb, help="largest request body")
    p.add_argument(
        "--max-decoded-mb", type=float, default=d.max_decoded_mb, help="decoded inline patches per /v1/score request"
    )
    p.add_argument("--job-timeout", type=float, default=d.job_timeout_s, help="seconds an assess job may run")
    p.add_argument("--workers", type=positive_int, default=d.workers, help="assess jobs run at a time")
    p.add_argument("--max-queue", type=positive_int, default=d.max_queue, help="assess jobs waiting (then 429)")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="largest uploaded scene")
    p.add_argument("--stac-url", default=None, help="STAC API for requests that name no scene (its host is allowed)")
    p.add_argument(
        "--allow-stac", nargs="+", default=[], metavar="HOST", help="hosts (or host:port) of STAC APIs and assets"
    )
    p.add_argument("--http-timeout", type=float, default=d.http_timeout_s, help="seconds per outbound request")
    add_common_args(p)
    return p


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


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn  # noqa: PLC0415 - the server only when serving (keeps --help fast)

    from service.api import create_app  # noqa: PLC0415 - loads torch and the models
    from service.assess import factor_sources  # noqa: PLC0415 - with the service

    args = build_parser().parse_args(argv)
    setup_tracking(args.tracking_uri, verbose=args.verbose)
    none_named = args.tabular_model is None and args.imagery_model is None and args.fusion_model is None
    for flag, kind in (("tabular_model", "tabular"), ("imagery_model", "imagery"), ("fusion_model", "fusion")):
        given = getattr(args, flag)
        if given is not None or none_named:  # no model named: the registered @champion of each kind
            option = f"--{flag.replace('_', '-')}"
            setattr(args, flag, model_or_champion(given, kind, option, required=False))
    if args.tabular_model is None and args.imagery_model is None:
        raise UserError(
            "give --tabular-model, --imagery-model or both (or promote registered models to @champion: "
            "python -m pipelines.promote landslide-imagery VERSION --alias champion)"
        )
    cfg = ServiceConfig(
        tabular_model=args.tabular_model,
        imagery_model=args.imagery_model,
        fusion_model=args.fusion_model,
        runtime=args.runtime,
        workdir=args.workdir,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        images_root=args.images_root,
        scenes_root=args.scenes_root,
        dem=args.dem,
        factors=list(args.factors),
        max_batch=args.max_batch,
        max_area_km2=args.max_area_km2,
        max_request_mb=args.max_request_mb,
        max_decoded_mb=args.max_decoded_mb,
        job_timeout_s=args.job_timeout,
        workers=args.workers,
        max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb,
        stac_url=args.stac_url,
        allow_stac=list(args.allow_stac),
        http_timeout_s=args.http_timeout,
        seed=args.seed,
    )
    check_port(cfg.host, cfg.port)  # before loading models: one line, exit 2
    factor_sources(cfg.factors)  # one-line errors for missing rasters now, not in every job
    if cfg.dem and not Path(cfg.dem).is_file():
        raise InputNotFoundError(f"--dem {cfg.dem}: not found")
    seed_everything(cfg.seed)
    app = create_app(cfg)
    check_port(cfg.host, cfg.port)  # still free after loading the models
    print(f"serving on http://{cfg.host}:{cfg.port}/ (docs: /docs); Ctrl-C to stop", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning" if not args.verbose else "info")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
