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

from dataclasses import dataclass
from pathlib import Path

from common.cli import RunOptions, UserError
from common.options import arg, nested, to_dict
from imagery.data.choices import DEFAULT_COLLECTION, DEFAULT_STAC_URL
from pipelines._command import Command, Context

EXPERIMENT = "imagery-fetch"


@dataclass
class FetchSceneOptions:
    """The flags of ``python -m pipelines.fetch_scene`` (logged as the run's ``config.json``)."""

    bbox: list[float] = arg("degrees", nargs=4, metavar=("W", "S", "E", "N"))
    start: str = arg("first date, YYYY-MM-DD")
    end: str = arg("last date, YYYY-MM-DD")
    out: str = arg("output folder (a scene folder predict_scene reads)")
    stac_url: str | None = arg(f"STAC API (default {DEFAULT_STAC_URL}; not with --items)", default=None)
    items: str | None = arg("a saved STAC item or item collection JSON instead of a search", default=None)
    collection: str = arg("collection (default %(default)s)", default=DEFAULT_COLLECTION)
    max_cloud: float = arg("largest eo:cloud_cover, percent (default 20)", default=20.0)
    bands: list[str] | None = arg("bands to fetch (default all, plus SCL)", default=None)
    dem_collection: str | None = arg("DEM collection to mosaic over the box (cop-dem-glo-30)", default=None)
    run: RunOptions = nested(RunOptions)


def logged(o: FetchSceneOptions, ctx: Context) -> dict[str, object]:
    """Check the flags; the run's params: the options with the STAC URL resolved."""
    from imagery.data.stac import check_bbox, check_dates  # noqa: PLC0415 - GDAL loads when the command runs

    if o.stac_url and o.items:
        raise UserError("--stac-url and --items exclude each other: search an API or read saved items")
    check_bbox(o.bbox)
    check_dates(o.start, o.end)
    if o.items and o.dem_collection:
        raise UserError("--dem-collection searches a STAC API; use it with --stac-url, not with --items")
    out = Path(o.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    return {**to_dict(o), "stac_url": None if o.items else o.stac_url or DEFAULT_STAC_URL}


def run(o: FetchSceneOptions, ctx: Context) -> dict[str, object]:
    """Pick the best item and write the box (:func:`imagery.data.stac.write_box`), with a DEM when asked."""
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from common.atomic import atomic_dir  # noqa: PLC0415 - loaded when the command runs
    from imagery.data.stac import (  # noqa: PLC0415 - GDAL loads when the command runs
        check_bbox,
        check_dates,
        fetch_dem,
        load_items,
        pick_item,
        search_items,
        write_box,
    )

    bbox = check_bbox(o.bbox)
    start, end = check_dates(o.start, o.end)
    url = o.stac_url or DEFAULT_STAC_URL
    out = Path(o.out)
    if o.items:
        items, where = load_items(o.items), o.items
    else:
        items, where = search_items(url, o.collection, bbox, start, end), url
    item = pick_item(items, bbox, start=start, end=end, max_cloud=o.max_cloud, where=where)
    props = item.get("properties") or {}
    print(f"item {item.get('id')} ({str(props.get('datetime'))[:10]}, cloud {props.get('eo:cloud_cover')}%)")
    with atomic_dir(out) as staging:  # the scene folder appears whole, or not at all
        write_box(item, bbox, staging, bands=o.bands, source=where)
        if o.dem_collection:
            dem_items = search_items(url, o.dem_collection, bbox)
            fetch_dem(dem_items, bbox, staging / "dem.tif", collection=o.dem_collection)
            print(f"  DEM  {len(dem_items)} item(s) of {o.dem_collection} -> dem.tif")
    mlflow.log_params({"item_id": str(item.get("id")), "item_date": str(props.get("datetime"))[:10]})
    mlflow.log_artifact(str(out / "scene.json"))
    files = sorted(str(p) for p in out.iterdir() if p.is_file())
    ctx.say(f"wrote {out} (scene.json, {len(list(out.glob('*.tif')))} rasters); run {ctx.run_id}")
    return {"out": str(out), "item": str(item.get("id")), "files": files}


COMMAND = Command("fetch_scene", FetchSceneOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=logged)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
