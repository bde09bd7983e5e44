"""Sentinel-2 scenes from a STAC API (or saved STAC JSON), cut to a bounding box (``pipelines.fetch_scene``).

* :func:`search_items`: the real ``pystac-client`` search (``collections``, ``bbox``, ``datetime``) against a
  STAC API; default Earth Search v1 (:data:`DEFAULT_STAC_URL`, collection ``sentinel-2-l2a``: public COGs,
  no account). The cloud-cover limit is applied to the returned items (``eo:cloud_cover``), so APIs
  without the query extension work too. An unreachable API or an HTTP error is a one-line
  :class:`common.cli.UserError` naming the URL (and the status). Sentinel Hub is not supported (it needs an
  account); Planetary Computer items need signed hrefs to be read.
* :func:`load_items`: a saved item or item collection (``--items``).
* :func:`pick_item`: among the items whose footprint covers the whole box, the least cloudy (the most
  recent on ties). Boxes that no single item covers are an error naming the best coverage: scenes are not
  mosaicked (a box across two tiles is fetched as two boxes).
* :func:`write_box`: only the box, read window by window from each band's COG (remote COGs through GDAL's
  ``/vsicurl/`` range requests), written as one COG per band (``B02.tif`` ... ``B8A.tif``, ``SCL.tif``) at the
  band's own resolution, with the box snapped outwards to whole pixels of the coarsest band (60 m) so that
  the 10, 20 and 60 m bands cover exactly the same extent; plus ``scene.json`` (item id, date, CRS, bbox, cloud cover,
  processing baseline and per-band scale/offset), which :func:`imagery.data.sentinel2.open_scene` reads.
* :func:`fetch_dem`: DEM items of another collection (e.g. ``cop-dem-glo-30``) intersecting the box,
  mosaicked onto one EPSG:4326 grid covering the box and written as ``dem.tif``.

Asset keys of Earth Search v1 (``red``, ``nir`` ...), v0 and Planetary Computer (``B04`` ...) are all
understood (:func:`imagery.data.sentinel2.item_band_assets`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from common.atomic import atomic_write
from common.cancel import check_cancelled
from common.cli import InputNotFoundError, UserError, one_line
from common.geo import CogWriter, Grid, RasterOnGrid, host_allowed, http_timeouts, iter_windows, transform_geometries
from common.geo.grid import Window
from imagery.data.bands import DEFAULT_COLLECTION, DEFAULT_STAC_URL, KNOWN_BANDS, canonical_band
from imagery.data.sentinel2 import SCENE_JSON, href_to_path, item_band_assets, item_scale

#: File name of each band written by :func:`write_box` (zero-padded, as in Sentinel-2 products).
FILE_NAMES = {b: (b if b in ("B8A", "SCL") else f"B{int(b[1:]):02d}") for b in KNOWN_BANDS if b[0] in "BS"}


def check_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """``(W, S, E, N)`` in degrees; one-line errors for W >= E, S >= N or values outside -180..180 / -90..90."""
    if len(bbox) != 4:
        raise UserError(f"--bbox needs 4 numbers W S E N, got {len(bbox)}")
    w, s, e, n = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        raise UserError(f"--bbox {w} {s} {e} {n}: values must be finite degrees")
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise UserError(f"--bbox {w} {s} {e} {n}: longitudes must be in -180..180 and latitudes in -90..90")
    if w >= e:
        raise UserError(
            f"--bbox {w} {s} {e} {n}: west {w} must be less than east {e} (boxes across 180 are not supported)"
        )
    if s >= n:
        raise UserError(f"--bbox {w} {s} {e} {n}: south {s} must be less than north {n}")
    return w, s, e, n


def check_dates(start: str, end: str) -> tuple[str, str]:
    """``(start, end)`` as ISO dates (YYYY-MM-DD); one-line errors for bad dates or start after end."""
    try:
        d0, d1 = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError:
        raise UserError(f"--start {start} / --end {end}: expected dates as YYYY-MM-DD") from None
    if d0 > d1:
        raise UserError(f"--start {start} is after --end {end}")
    return d0.isoformat(), d1.isoformat()


def _api_error(url: str, exc: BaseException) -> UserError:
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    text = one_line(exc)[:160]
    if status is not None:
        return UserError(f"STAC API {url} returned HTTP {status}: {text}")
    return UserError(f"STAC API {url} is unreachable or failed: {text}")


def search_items(
    url: str,
    collection: str,
    bbox: Sequence[float],
    start: str | None = None,
    end: str | None = None,
    *,
    max_items: int = 500,
    timeout_s: float = 60.0,
    hosts: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Items of ``collection`` intersecting ``bbox`` (and the date range, when given) from the STAC API ``url``.

    Every HTTP request has a ``timeout_s`` connect and read timeout and is retried at most once; with
    ``hosts``, a request to any other host (a ``next`` link elsewhere) is refused."""
    from pystac_client import Client  # noqa: PLC0415 - CLI start-up time
    from pystac_client.exceptions import APIError  # noqa: PLC0415 - CLI start-up time
    from pystac_client.stac_api_io import StacApiIO  # noqa: PLC0415 - CLI start-up time

    def only_hosts(request: Any) -> None:
        if hosts is not None and not host_allowed(str(request.url), hosts):
            raise UserError(f"STAC API {url}: a link leads to a host this service does not allow")

    try:
        # timeout and request_modifier go to open(): it overwrites those of the StacApiIO given
        io_ = StacApiIO(max_retries=1)
        client = Client.open(url, stac_io=io_, timeout=timeout_s, request_modifier=only_hosts)
        kwargs: dict[str, Any] = {"collections": [collection], "bbox": list(bbox), "max_items": max_items}
        if start and end:
            kwargs["datetime"] = f"{start}T00:00:00Z/{end}T23:59:59Z"
        return list(client.search(**kwargs).items_as_dicts())
    except UserError:
        raise
    except APIError as exc:
        raise _api_error(url, exc) from None
    except OSError as exc:  # requests' connection errors are OSErrors
        raise _api_error(url, exc) from None
    except Exception as exc:  # noqa: BLE001 - pystac-client raises bare errors for non-STAC answers
        if exc.__class__.__module__.startswith(("pystac", "requests", "urllib3", "json")):
            raise _api_error(url, exc) from None
        raise


def load_items(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Items of a saved STAC item or item collection (GeoJSON FeatureCollection)."""
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"--items {p}: file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--items {p}: not valid JSON ({one_line(exc)[:120]})") from None
    items = data.get("features") if isinstance(data, dict) and data.get("type") == "FeatureCollection" else [data]
    items = [it for it in items or [] if isinstance(it, dict) and it.get("type") == "Feature"]
    if not items:
        raise UserError(f"--items {p}: no STAC items (expected a Feature or a FeatureCollection of them)")
    for it in items:
        it.setdefault("_base", str(p.parent))
    return items


def coverage(item: dict[str, Any], bbox: Sequence[float]) -> float:
    """Share (0..1) of the lon/lat box inside the item's footprint (its geometry, else its bbox)."""
    box = shapely.box(*bbox)
    geom = item.get("geometry")
    if geom:
        shape = shapely.geometry.shape(geom)
    elif item.get("bbox"):
        shape = shapely.box(*item["bbox"][:4])
    else:
        return 0.0
    return float(shapely.intersection(shape, box).area / box.area)


def _in_dates(item: dict[str, Any], start: str | None, end: str | None) -> bool:
    if not (start and end):
        return True
    day = str((item.get("properties") or {}).get("datetime") or "")[:10]
    return bool(day) and start <= day <= end


def pick_item(
    items: list[dict[str, Any]],
    bbox: Sequence[float],
    *,
    start: str | None = None,
    end: str | None = None,
    max_cloud: float = 100.0,
    where: str = "the catalogue",
) -> dict[str, Any]:
    """The least cloudy item covering the whole box, within the dates and the cloud limit (module docstring)."""
    dated = [it for it in items if _in_dates(it, start, end)]
    if not dated:
        raise UserError(f"no Sentinel-2 item for bbox {tuple(bbox)} between {start} and {end} in {where}")

    def cloud(it: dict[str, Any]) -> float:
        value = (it.get("properties") or {}).get("eo:cloud_cover")
        return float(value) if value is not None else 100.0

    clear = [it for it in dated if cloud(it) <= max_cloud]
    if not clear:
        best = min(dated, key=cloud)
        raise UserError(
            f"{len(dated)} item(s) for bbox {tuple(bbox)} between {start} and {end}, none with cloud cover <= "
            f"{max_cloud:g}% (least: {cloud(best):.1f}%, {best.get('id')}); raise --max-cloud"
        )
    covering = [it for it in clear if coverage(it, bbox) >= 0.999]
    if not covering:
        best = max(clear, key=lambda it: coverage(it, bbox))
        raise UserError(
            f"no single item covers bbox {tuple(bbox)} (best: {best.get('id')} covers {coverage(best, bbox):.0%}); "
            "scenes are not mosaicked: fetch a box inside one Sentinel-2 tile"
        )
    covering.sort(key=lambda it: (cloud(it), str((it.get("properties") or {}).get("datetime") or "")[::-1]))
    best_cloud = cloud(covering[0])
    ties = [it for it in covering if cloud(it) == best_cloud]
    return max(ties, key=lambda it: str((it.get("properties") or {}).get("datetime") or ""))


def _box_grid(grid: Grid, bbox: Sequence[float], snap: float | None) -> Grid:
    """The part of ``grid`` covering the lon/lat ``bbox``, whole pixels (and whole ``snap`` m cells of the grid)."""
    box = transform_geometries(shapely.segmentize(shapely.box(*bbox), 0.01), "EPSG:4326", grid.crs)
    left, bottom, right, top = box.bounds
    t = grid.transform
    step_x, step_y = (snap, snap) if snap else (t.a, -t.e)
    x0 = t.c + math.floor((left - t.c) / step_x) * step_x
    x1 = t.c + math.ceil((right - t.c) / step_x) * step_x
    y1 = t.f - math.floor((t.f - top) / step_y) * step_y
    y0 = t.f - math.ceil((t.f - bottom) / step_y) * step_y
    c0 = max(0, round((x0 - t.c) / t.a))
    c1 = min(grid.width, round((x1 - t.c) / t.a))
    r0 = max(0, round((y1 - t.f) / t.e))
    r1 = min(grid.height, round((y0 - t.f) / t.e))
    if c1 <= c0 or r1 <= r0:
        raise UserError(f"bbox {tuple(bbox)} does not overlap the raster grid in {grid.crs}")
    return grid.subgrid(Window(c0, r0, c1 - c0, r1 - r0))


def write_band_boxes(
    sources: dict[str, tuple[str, int]], bbox: Sequence[float], folder: Path, tags: dict[str, Any]
) -> dict[str, Grid]:
    """Write the ``bbox`` of each band ``{band: (path, 1-based band index)}`` as a COG ``folder/B02.tif`` ... at the
    band's own resolution, the box snapped outwards to whole pixels of the coarsest band (so that every band covers
    the same extent), values and nodata as stored; returns the grid written for each band."""
    grids = {b: Grid.from_raster(path) for b, (path, _) in sources.items()}
    coarsest = max(g.res[0] for g in grids.values())
    snap = (
        coarsest if all(abs(coarsest / g.res[0] - round(coarsest / g.res[0])) < 1e-9 for g in grids.values()) else None
    )
    written: dict[str, Grid] = {}
    for band, (path, index) in sources.items():
        sub = _box_grid(grids[band], bbox, snap)
        with RasterOnGrid(path, sub, "nearest", bands=index) as r:
            dtype, nodata = np.dtype(r.src_dtype), r.src_nodata
            nodata = nodata if nodata is not None else (np.nan if dtype.kind == "f" else 0)
            target = folder / f"{FILE_NAMES[band]}.tif"
            with CogWriter(target, sub, dtype, nodata, tags={"band": band, **tags}) as w:
                for win in iter_windows(sub, 1024, 1024):
                    check_cancelled()  # a service job past its timeout stops here
                    w.write(r.read(win), win)
        written[band] = sub
    return written


def write_box(
    item: dict[str, Any],
    bbox: Sequence[float],
    out: str | os.PathLike[str],
    *,
    bands: Sequence[str] | None = None,
    source: str = "",
    log: Any = print,
    timeout_s: float = 60.0,
) -> Path:
    """Write the box of ``item``'s band assets into ``out`` (module docstring); returns ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    base = Path(item.get("_base", "."))
    assets = item_band_assets(item)
    chosen = {canonical_band(b) for b in bands} if bands else set(assets)
    wanted = [b for b in assets if b in chosen or b == "SCL"]
    if not wanted:
        raise UserError(f"item {item.get('id')}: none of the bands {', '.join(bands or [])} among its assets")
    props = item.get("properties") or {}
    sources = {b: (href_to_path(str(assets[b][1]["href"]), base), 1) for b in wanted}
    with http_timeouts(timeout_s):  # remote COGs: no read waits forever
        grids = write_band_boxes(sources, bbox, folder, {"item": item.get("id", "")})
    meta_bands: dict[str, Any] = {}
    for band, sub in grids.items():
        key, asset = assets[band]
        scale, offset, src = (1.0, 0.0, "classes") if band == "SCL" else item_scale(asset, props)
        meta_bands[band] = {"asset": key, "href": str(asset["href"]), "scale": scale, "offset": offset, "from": src}
        log(f"  {band:4s} {sub.width}x{sub.height} px at {sub.res[0]:g} m -> {FILE_NAMES[band]}.tif")
    scene = {
        "id": item.get("id"),
        "items": [item.get("id")],
        "collection": item.get("collection"),
        "date": str(props.get("datetime") or "")[:10] or None,
        "datetime": props.get("datetime"),
        "cloud_cover": props.get("eo:cloud_cover"),
        "processing_baseline": props.get("s2:processing_baseline"),
        "product": "L2A" if "SCL" in wanted else "L1C",
        "crs": grids[wanted[0]].crs,
        "bbox": list(bbox),
        "source": source,
        "bands": meta_bands,
    }
    with atomic_write(folder / SCENE_JSON) as fh:
        json.dump(scene, fh, indent=2)
    return folder


def _data_asset(item: dict[str, Any]) -> dict[str, Any]:
    assets = item.get("assets") or {}
    for key in ("data", "elevation", "dem", "DEM"):
        if key in assets:
            return assets[key]
    for asset in assets.values():
        if "data" in (asset.get("roles") or []) or "tiff" in str(asset.get("type", "")):
            return asset
    raise UserError(f"DEM item {item.get('id')} has no data asset (expected a 'data' GeoTIFF)")


def fetch_dem(
    items: list[dict[str, Any]],
    bbox: Sequence[float],
    out_path: str | os.PathLike[str],
    *,
    collection: str = "",
    timeout_s: float = 60.0,
) -> Path:
    """Mosaic the DEM ``items`` over ``bbox`` onto one EPSG:4326 grid and write it as a float32 COG.

    The grid has the first item's pixel size; an item-free part of the box is an error naming the share.
    """
    if not items:
        raise UserError(f"no DEM item of collection {collection!r} intersects bbox {tuple(bbox)}")
    with http_timeouts(timeout_s):  # remote COGs: no read waits forever
        return _fetch_dem(items, bbox, out_path, collection)


def _fetch_dem(
    items: list[dict[str, Any]], bbox: Sequence[float], out_path: str | os.PathLike[str], collection: str
) -> Path:
    w, s, e, n = bbox
    paths = [href_to_path(str(_data_asset(it)["href"]), Path(it.get("_base", "."))) for it in items]
    first = Grid.from_raster(paths[0])
    res = first.res if first.is_geographic else (1 / 3600, 1 / 3600)
    grid = Grid.from_bounds((w, s, e, n), "EPSG:4326", res)
    mosaic = np.full(grid.shape, np.nan, dtype=np.float32)
    for path in paths:
        try:
            with RasterOnGrid(path, grid, "bilinear", bands=1) as r:
                part = r.read()
        except UserError:
            continue  # an item that does not reach the box
        fill = np.isnan(mosaic) & np.isfinite(part)
        mosaic[fill] = part[fill]
    share = float(np.isfinite(mosaic).mean())
    if share < 0.99:
        raise UserError(
            f"the DEM items of {collection!r} cover {share:.1%} of bbox {tuple(bbox)}; expected the whole box"
        )
    with CogWriter(
        out_path, grid, "float32", np.nan, tags={"units": "metres", "long_name": "elevation", "collection": collection}
    ) as wr:
        wr.write(mosaic)
    return Path(out_path)


__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_STAC_URL",
    "check_bbox",
    "check_dates",
    "coverage",
    "fetch_dem",
    "load_items",
    "pick_item",
    "search_items",
    "write_band_boxes",
    "write_box",
]
