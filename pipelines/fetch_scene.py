"""``python -m pipelines.fetch_scene``: search a STAC API for Sentinel-2 L2A, cut the best scene to a box.

Searches ``--stac-url`` (default: Earth Search v1, public COGs, no account) with ``pystac-client`` for
``--collection`` items intersecting ``--bbox W S E N`` (degrees) between ``--start`` and ``--end``, or reads
saved items (``--items``); picks the least cloudy item covering the whole box (``--max-cloud`` percent at
most) and writes only the box, read window by window from the COGs, as a band folder that
``pipelines.predict_scene`` reads (``B02.tif`` ... ``SCL.tif``, ``scene.json``). ``--dem-collection`` (e.g.
``cop-dem-glo-30``) also mosaics a DEM over the box into ``dem.tif``.

Examples::

    python -m pipelines.fetch_scene --bbox 7.90 46.40 8.00 46.46 --start 2023-07-01 --end 2023-08-31 --out scene/ \\
        --dem-collection cop-dem-glo-30
    python -m pipelines.fetch_scene --items saved_items.json --bbox ... --start ... --end ... --out scene/
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.atomic import atomic_dir
from common.cli import UserError, add_common_args, csv_list, run_main
from common.seed import seed_everything
from imagery.data.stac import (
    DEFAULT_COLLECTION,
    DEFAULT_STAC_URL,
    check_bbox,
    check_dates,
    fetch_dem,
    load_items,
    pick_item,
    search_items,
    write_box,
)

EXPERIMENT = "imagery-fetch"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.fetch_scene", description=__doc__.split("\n\n")[0])
    p.add_argument("--bbox", nargs=4, type=float, required=True, metavar=("W", "S", "E", "N"), help="degrees")
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date, YYYY-MM-DD")
    p.add_argument("--out", required=True, help="output folder (a scene folder predict_scene reads)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--stac-url", default=None, help=f"STAC API (default {DEFAULT_STAC_URL})")
    src.add_argument("--items", default=None, help="a saved STAC item or item collection JSON instead of a search")
    p.add_argument("--collection", default=DEFAULT_COLLECTION, help="collection (default %(default)s)")
    p.add_argument("--max-cloud", type=float, default=20.0, help="largest eo:cloud_cover, percent (default 20)")
    p.add_argument("--bands", type=csv_list, default=None, help="bands to fetch (default all, plus SCL)")
    p.add_argument("--dem-collection", default=None, help="DEM collection to mosaic over the box (cop-dem-glo-30)")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from common.tracking import setup_tracking, tracked_run  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    bbox = check_bbox(args.bbox)
    start, end = check_dates(args.start, args.end)
    url = args.stac_url or DEFAULT_STAC_URL
    if args.items and args.dem_collection:
        raise UserError("--dem-collection searches a STAC API; use it with --stac-url, not with --items")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    config = {**vars(args), "stac_url": None if args.items else url}
    seed_everything(args.seed)
    setup_tracking(args.tracking_uri, verbose=args.verbose)
    with tracked_run(args.experiment or EXPERIMENT, config, run_name=args.run_name) as run:
        if args.items:
            items, where = load_items(args.items), args.items
        else:
            items, where = search_items(url, args.collection, bbox, start, end), url
        item = pick_item(items, bbox, start=start, end=end, max_cloud=args.max_cloud, where=where)
        props = item.get("properties") or {}
        print(f"item {item.get('id')} ({str(props.get('datetime'))[:10]}, cloud {props.get('eo:cloud_cover')}%)")
        with atomic_dir(out) as staging:  # the scene folder appears whole, or not at all
            write_box(item, bbox, staging, bands=args.bands, source=where)
            if args.dem_collection:
                dem_items = search_items(url, args.dem_collection, bbox)
                fetch_dem(dem_items, bbox, staging / "dem.tif", collection=args.dem_collection)
                print(f"  DEM  {len(dem_items)} item(s) of {args.dem_collection} -> dem.tif")
        mlflow.log_params({"item_id": str(item.get("id")), "item_date": str(props.get("datetime"))[:10]})
        mlflow.log_artifact(str(out / "scene.json"))
    print(f"wrote {out} (scene.json, {len(list(out.glob('*.tif')))} rasters); run {run.info.run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
