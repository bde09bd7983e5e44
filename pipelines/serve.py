"""``python -m pipelines.serve``: the HTTP API and map page (FastAPI + uvicorn) on the given models.

Models are loaded once at start. ``--host`` defaults to 127.0.0.1 (this machine only); serving to a
network needs ``--host 0.0.0.0`` and, sensibly, ``--api-key`` (or ``$LANDSLIDE_API_KEY``): requests to
``/v1/*`` must then carry it in the ``X-API-Key`` header. Finished ``/v1/assess`` jobs stay under
``--workdir`` across restarts. OpenAPI docs: ``http://HOST:PORT/docs``.

Example::

    python -m pipelines.serve --tabular-model runs:/<tab>/model --imagery-model runs:/<img> \\
        --fusion-model runs:/<fus>/fuser.json --scenes-root scenes/ --dem dem.tif \\
        --factors slope_deg=factors/slope_deg.tif ... --port 8000
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import InputNotFoundError, UserError, add_common_args, positive_int, run_main
from common.seed import seed_everything
from common.tracking import setup_tracking
from pipelines._register import model_or_champion
from pipelines._segmenter_args import add_engine_args, engine_spec_of
from service.config import ServiceConfig


def build_parser() -> argparse.ArgumentParser:
    d = ServiceConfig()
    p = argparse.ArgumentParser(prog="python -m pipelines.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--tabular-model", default=None, help="tabular model URI (runs:/<id>/model, run id or folder)")
    p.add_argument("--imagery-model", default=None, help="segmenter URI (runs:/<id>, folder or .onnx)")
    p.add_argument("--fusion-model", default=None, help="fuser URI (runs:/<id>/fuser.json, run id or JSON path)")
    add_engine_args(p)
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
    p.add_argument("--job-timeout", type=float, default=d.job_timeout_s, help="seconds an assess job may run")
    p.add_argument("--workers", type=positive_int, default=d.workers, help="assess jobs run at a time")
    add_common_args(p)
    return p


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
        runtime=engine_spec_of(args),
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
        job_timeout_s=args.job_timeout,
        workers=args.workers,
        seed=args.seed,
    )
    factor_sources(cfg.factors)  # one-line errors for missing rasters now, not in every job
    if cfg.dem and not Path(cfg.dem).is_file():
        raise InputNotFoundError(f"--dem {cfg.dem}: not found")
    seed_everything(cfg.seed)
    app = create_app(cfg)
    print(f"serving on http://{cfg.host}:{cfg.port}/ (docs: /docs); Ctrl-C to stop", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning" if not args.verbose else "info")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
