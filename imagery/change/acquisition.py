"""Which Sentinel-2 observations make the before and after composites, and on which grid.

* Items come from a saved ItemCollection (:func:`imagery.data.stac.load_items`; asset hrefs may be local band
  files, relative to the JSON) or a STAC API search (:func:`imagery.data.stac.search_items`, pystac-client).
* Every item whose footprint intersects the area is used (all MGRS tiles it touches, not only the least cloudy
  one), when its date is in the pre-event window ``[event - pre_days, event)`` or the post-event window
  ``(event, event + post_days]`` (an image on the event day itself may show either state: never used) and its
  ``eo:cloud_cover`` is at most ``max_cloud`` (items without it are kept: SCL masks them per pixel).
* Items of one date and relative orbit are one acquisition (:attr:`Observation.key`); the compositing mosaics
  them (the first valid pixel wins) before the per-pixel median over dates.
* The output grid is the area's UTM zone (of its centre) at 10 m, its edges snapped outwards to whole 10 m
  multiples so grids of neighbouring areas line up with the Sentinel-2 10 m pixels.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely

from common.cli import UserError
from common.geo import Grid, geodesic_area_m2, transform_geometries
from imagery.data.sentinel2 import BandFile, scene_from_item

#: Bands the composites need (canonical names of :mod:`imagery.data.sentinel2`): blue, green, red, NIR, SWIR1.
COMPOSITE_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B8", "B11")
#: Sentinel-2 revisit with two satellites, days (at the equator; more often at higher latitudes).
REVISIT_DAYS = 5
#: Output pixel size, metres (Sentinel-2's finest bands).
RESOLUTION_M = 10.0


@dataclass(frozen=True)
class Observation:
    """One Sentinel-2 item used in a composite: its band files (:class:`BandFile`, with scale/offset), date,
    relative orbit (``None`` when the item does not say) and cloud cover (percent, ``None`` when unknown)."""

    item_id: str
    date: dt.date
    orbit: int | None
    files: dict[str, BandFile]
    cloud_cover: float | None
    footprint: Any  # shapely geometry in EPSG:4326
    #: the item says it is synthetic (``properties.synthetic``; the scene metadata ``predict_scene`` reads too)
    synthetic: bool = False

    @property
    def key(self) -> tuple[str, int | None]:
        """Items with the same key (date, orbit) are one acquisition, mosaicked before the median."""
        return (self.date.isoformat(), self.orbit)

    @property
    def has_scl(self) -> bool:
        return "SCL" in self.files


@dataclass(frozen=True)
class EventWindows:
    """The dates of the two windows (inclusive bounds) and the observations in each, sorted by date."""

    event_date: dt.date
    pre_start: dt.date
    pre_end: dt.date
    post_start: dt.date
    post_end: dt.date
    pre: tuple[Observation, ...]
    post: tuple[Observation, ...]


def synthetic_scene(windows: EventWindows) -> bool:
    """Whether the event's scene is synthetic: every observation of both windows says so (one real item makes the
    composites real). A model that learnt from synthetic data only warns on a real scene
    (``imagery.inference.fitness.check_training_data``)."""
    return all(o.synthetic for o in (*windows.pre, *windows.post))


def parse_date(text: str, flag: str = "--event-date") -> dt.date:
    """A ``YYYY-MM-DD`` date; a one-line error otherwise."""
    try:
        return dt.date.fromisoformat(str(text).strip())
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected a date YYYY-MM-DD") from None


def check_cloud_limit(value: float, flag: str = "--max-cloud") -> float:
    """An item cloud limit (``eo:cloud_cover``), percent 0..100; a one-line error naming ``flag`` otherwise."""
    if not 0.0 <= float(value) <= 100.0:
        raise UserError(f"{flag} {value:g}: expected a cloud cover in percent, 0 to 100")
    return float(value)


def event_windows(event: dt.date, pre_days: int, post_days: int) -> tuple[dt.date, dt.date, dt.date, dt.date]:
    """``(pre_start, pre_end, post_start, post_end)``, inclusive: ``[event - pre_days, event)`` and
    ``(event, event + post_days]``."""
    if pre_days < 1 or post_days < 1:
        raise UserError(f"--pre-days {pre_days} / --post-days {post_days}: both must be at least 1")
    one = dt.timedelta(days=1)
    return event - dt.timedelta(days=pre_days), event - one, event + one, event + dt.timedelta(days=post_days)


def _item_date(item: dict[str, Any], where: str) -> dt.date:
    props = item.get("properties") or {}
    text = str(props.get("datetime") or props.get("start_datetime") or "")[:10]
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"{where}: item {item.get('id')!r} has no date (properties.datetime {props.get('datetime')!r}); "
            "every item needs a datetime"
        ) from None


def _footprint(item: dict[str, Any]) -> Any:
    if item.get("geometry"):
        return shapely.geometry.shape(item["geometry"])
    if item.get("bbox"):
        return shapely.box(*item["bbox"][:4])
    return None


def select_observations(
    items: Sequence[dict[str, Any]],
    bbox: Sequence[float],
    event: dt.date,
    pre_days: int,
    post_days: int,
    *,
    max_cloud: float = 100.0,
    where: str = "the items",
    cloud_flag: str = "--max-cloud",
) -> EventWindows:
    """The observations of both windows over the lon/lat ``bbox`` (module docstring); one-line errors for an item
    without a date and for a window without any item (``cloud_flag``: the option that sets ``max_cloud``, named
    in the hint)."""
    pre_start, pre_end, post_start, post_end = event_windows(event, pre_days, post_days)
    area = shapely.box(*bbox)
    pre: list[Observation] = []
    post: list[Observation] = []
    latest: dt.date | None = None
    for item in items:
        day = _item_date(item, where)
        shape = _footprint(item)
        if shape is None or shape.intersects(area):
            latest = day if latest is None or day > latest else latest
        if not (pre_start <= day <= pre_end or post_start <= day <= post_end):
            continue
        if shape is not None and not shape.intersects(area):
            continue
        props = item.get("properties") or {}
        cloud = props.get("eo:cloud_cover")
        if cloud is not None and float(cloud) > max_cloud:
            continue
        scene = scene_from_item(item, Path(str(item.get("_base", "."))), where)
        missing = [b for b in COMPOSITE_BANDS if b not in scene.files]
        if missing:
            raise UserError(f"{where}: item {item.get('id')!r} lacks band(s) {missing} (needs {list(COMPOSITE_BANDS)})")
        orbit = props.get("sat:relative_orbit", props.get("s2:relative_orbit"))
        obs = Observation(
            item_id=str(item.get("id")),
            date=day,
            orbit=int(orbit) if orbit is not None else None,
            files=dict(scene.files),
            cloud_cover=float(cloud) if cloud is not None else None,
            footprint=shape if shape is not None else area,
            synthetic=bool(scene.metadata.get("synthetic")),
        )
        (pre if day < event else post).append(obs)
    for name, obs_list, start, end in (("pre", pre, pre_start, pre_end), ("post", post, post_start, post_end)):
        if not obs_list:
            hint = f"widen --{name}-days or raise {cloud_flag}"
            if name == "post" and (latest is None or latest <= event):
                after = latest or event
                hint = (
                    f"the latest item over the area is from {latest or 'no date'}: the next Sentinel-2 acquisition "
                    f"is expected around {after + dt.timedelta(days=REVISIT_DAYS)} (revisit {REVISIT_DAYS} days)"
                )
            raise UserError(
                f"no Sentinel-2 item over bbox {tuple(round(v, 5) for v in bbox)} in the {name}-event window "
                f"{start}..{end} (cloud cover <= {max_cloud:g}%) in {where}; {hint}"
            )
    pre.sort(key=lambda o: (o.date, o.item_id))
    post.sort(key=lambda o: (o.date, o.item_id))
    return EventWindows(event, pre_start, pre_end, post_start, post_end, tuple(pre), tuple(post))


def utm_crs(lon: float, lat: float) -> str:
    """The WGS 84 UTM zone of a point, as ``EPSG:326nn`` (north) / ``EPSG:327nn`` (south)."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def output_grid(bbox: Sequence[float], resolution: float = RESOLUTION_M) -> Grid:
    """The grid of a lon/lat ``bbox``: its centre's UTM zone, ``resolution`` m, edges snapped outwards."""
    w, s, e, n = (float(v) for v in bbox)
    crs = utm_crs((w + e) / 2, (s + n) / 2)
    box = transform_geometries(shapely.segmentize(shapely.box(w, s, e, n), 0.001), "EPSG:4326", crs)
    left, bottom, right, top = box.bounds
    r = float(resolution)
    left, bottom = math.floor(left / r) * r, math.floor(bottom / r) * r
    right, top = math.ceil(right / r) * r, math.ceil(top / r) * r
    return Grid.from_bounds((left, bottom, right, top), crs, r)


def area_km2(bbox: Sequence[float]) -> float:
    """Geodesic area of a lon/lat box, km2."""
    return geodesic_area_m2(shapely.segmentize(shapely.box(*bbox), 0.01), "EPSG:4326") / 1e6
