"""Sen12Landslides patches: the NetCDF4 (= HDF5) files ``<region>_<sensor>_<id>.nc`` of Hoehn et al. (2025).

One class per data source (torchgeo style), each reading one patch file into a :class:`Sen12Patch`:

* :class:`Sen12LandslidesS2`: Sentinel-2 L2A ``B02 B03 B04 B05 B06 B07 B08 B8A B11 B12`` (int16 reflectance x
  10000), ``SCL`` (scene classes), ``DEM`` (m) and ``MASK`` (0/1 landslide, the same at every step).
* :class:`Sen12LandslidesS1`: Sentinel-1 ``VV VH`` (float32 backscatter as stored), ``DEM``, ``MASK``.

Both read with h5py (no xarray needed): the ``time`` axis with its CF ``units`` (``days since 2022-10-05``) gives
the acquisition dates; ``event_date`` (attribute) splits them into pre-event steps (date before the event) and
post-event steps (on or after it). The files' ``pre_post_dates`` attribute (``{'pre': 7, 'post': 8}``) often
disagrees with the time axis (the shared Emilia-Romagna sample has 8 S2 dates before 2023-05-16; its S1 files
claim 9 + 10 of 15): the time axis wins and each disagreement is recorded in :attr:`Sen12Patch.warnings` and
emitted as a :class:`UserWarning`.

Georeferencing: the CRS comes from the ``spatial_ref`` variable (``crs_wkt``, else the ``crs`` attribute); the
transform from its ``GeoTransform`` attribute (GDAL order) when present (in the shared sample the ``x``/``y``
coordinates equal the pixel *corners* of that transform), else from the ``x``/``y`` coordinates read as pixel
centres. Arrays are ``(time, rows, cols)``, row 0 north, as stored.

API for callers (``map_event`` tests, temporal training channel sets)::

    patch = Sen12LandslidesS2()(path)          # or Sen12LandslidesS2().read(path, bands=("B04", "B08"))
    patch.bands["B04"]      # (T, H, W) int16 as stored; patch.reflectance("B04") -> float32 (T, H, W) / 10000
    patch.dates             # tuple[datetime.date, ...], len T
    patch.pre, patch.post   # index arrays into the time axis
    patch.mask, patch.dem   # (H, W) uint8, (H, W) float32
    patch.grid              # common.geo.Grid (CRS, transform, width, height)
    patch.clear()           # (T, H, W) bool: SCL says clear (S2); all True for S1
    patch.composite("NDVI", patch.pre)   # (H, W) per-pixel median over the clear pre-event steps
"""

from __future__ import annotations

import ast
import datetime as dt
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from affine import Affine

from common.cli import InputNotFoundError, UserError, one_line
from common.geo import Grid

#: Sentinel-2 band variables of an S2 patch, in file order.
S2_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: Sentinel-1 band variables of an S1 patch.
S1_BANDS: tuple[str, ...] = ("VV", "VH")
#: Divisor from the stored int16 S2 values to surface reflectance (0..1).
S2_REFLECTANCE_SCALE = 10000.0
#: SCL classes counted as a clear land observation (vegetation, bare soil, water, unclassified, snow excluded):
#: 4 vegetation, 5 not vegetated, 6 water, 7 unclassified, 11 snow/ice.
SCL_CLEAR: tuple[int, ...] = (4, 5, 6, 7, 11)

_UNITS_RE = re.compile(r"^\s*(days|hours|seconds)\s+since\s+(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2}(?::\d{2})?))?")
_SECONDS = {"days": 86400.0, "hours": 3600.0, "seconds": 1.0}


def _text(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.reshape(-1)[0])
    return str(value)


def decode_time(values: Sequence[float], units: str, where: str = "time") -> tuple[dt.date, ...]:
    """Dates of a CF time axis: ``values`` in ``units`` like ``'days since 2022-10-05'`` (days, hours, seconds)."""
    m = _UNITS_RE.match(units or "")
    if not m:
        raise UserError(f"{where}: time units {units!r} not understood (expected e.g. 'days since 2022-10-05')")
    base = dt.datetime.fromisoformat(m.group(2) + ("T" + m.group(3) if m.group(3) else ""))
    scale = _SECONDS[m.group(1)]
    return tuple((base + dt.timedelta(seconds=float(v) * scale)).date() for v in values)


def split_pre_post(dates: Sequence[dt.date], event_date: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the steps strictly before ``event_date`` and of those on or after it (an image on the event
    day may already show the event, so it is never used as 'before')."""
    d = np.array([x.toordinal() for x in dates])
    return np.flatnonzero(d < event_date.toordinal()), np.flatnonzero(d >= event_date.toordinal())


@dataclass(frozen=True)
class Sen12Patch:
    """One Sen12Landslides patch in memory. Arrays ``(T, H, W)`` as stored; see the module docstring."""

    path: Path
    sensor: str
    bands: Mapping[str, np.ndarray]
    dates: tuple[dt.date, ...]
    event_date: dt.date | None
    pre: np.ndarray
    post: np.ndarray
    grid: Grid
    mask: np.ndarray | None
    dem: np.ndarray | None
    scl: np.ndarray | None = None
    attrs: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def n_times(self) -> int:
        return len(self.dates)

    def reflectance(self, band: str) -> np.ndarray:
        """An S2 band as float32 surface reflectance ``(T, H, W)`` (stored / 10000); S1 bands as stored."""
        arr = np.asarray(self.bands[band], dtype=np.float32)
        return arr / np.float32(S2_REFLECTANCE_SCALE) if self.sensor == "s2" else arr

    def clear(self) -> np.ndarray:
        """``(T, H, W)`` bool: an S2 pixel is a clear land observation (SCL in :data:`SCL_CLEAR`); S1: all True."""
        if self.scl is None:
            return np.ones((self.n_times, *self.grid.shape), dtype=bool)
        return np.isin(self.scl, SCL_CLEAR)

    def composite(self, band: str, steps: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Per-pixel median of ``band`` (reflectance, or ``"NDVI"`` from B04/B08) over the clear observations of
        ``steps`` (indices into the time axis, e.g. :attr:`pre` / :attr:`post`; default all): ``(H, W)`` float32,
        NaN where no step is clear."""
        idx = np.arange(self.n_times) if steps is None else np.asarray(steps, dtype=int)
        if band == "NDVI":
            red, nir = self.reflectance("B04")[idx], self.reflectance("B08")[idx]
            with np.errstate(invalid="ignore", divide="ignore"):
                values = (nir - red) / (nir + red)
        else:
            values = self.reflectance(band)[idx]
        values = np.where(self.clear()[idx] & np.isfinite(values), values, np.nan)
        out = np.full(self.grid.shape, np.nan, dtype=np.float32)
        seen = np.isfinite(values).any(axis=0)
        out[seen] = np.nanmedian(values[:, seen], axis=0)
        return out


class Sen12LandslidesBase:
    """Reader of one sensor's patches; subclasses set :attr:`sensor` and :attr:`all_bands`."""

    sensor: ClassVar[str] = ""
    all_bands: ClassVar[tuple[str, ...]] = ()
    has_scl: ClassVar[bool] = False

    def __call__(self, path: str | os.PathLike[str]) -> Sen12Patch:
        return self.read(path)

    def read(self, path: str | os.PathLike[str], bands: Sequence[str] | None = None) -> Sen12Patch:
        """Read ``path`` (all bands, or only ``bands``); one-line :class:`UserError` for a missing or bad file."""
        import h5py  # noqa: PLC0415 - optional at import time

        p = Path(path)
        if not p.is_file():
            raise InputNotFoundError(f"{p}: Sen12Landslides patch not found")
        wanted = tuple(self.all_bands if bands is None else bands)
        unknown = [b for b in wanted if b not in self.all_bands]
        if unknown:
            raise UserError(f"{p}: unknown {self.sensor} band(s) {unknown}; expected some of {list(self.all_bands)}")
        try:
            f = h5py.File(p, "r")
        except OSError as exc:
            raise UserError(f"{p}: not a readable NetCDF4/HDF5 file ({one_line(exc)[:120]})") from None
        with f:
            missing = [v for v in (*wanted, "time", "x", "y") if v not in f]
            if missing:
                raise UserError(f"{p}: missing variable(s) {missing} for a Sen12Landslides {self.sensor} patch")
            attrs = {k: _text(v) for k, v in f.attrs.items() if not k.startswith("_")}
            data = {b: np.asarray(f[b][()]) for b in wanted}
            shapes = {b: a.shape for b, a in data.items()}
            if len({s for s in shapes.values()}) > 1 or any(len(s) != 3 for s in shapes.values()):
                raise UserError(f"{p}: band arrays must all be (time, y, x), got {shapes}")
            dates = decode_time(f["time"][()], _text(f["time"].attrs.get("units", "")), where=f"{p}:time")
            grid = _grid(f, p)
            mask = np.asarray(f["MASK"][0], dtype=np.uint8) if "MASK" in f else None
            dem = np.asarray(f["DEM"][0], dtype=np.float32) if "DEM" in f else None
            scl = np.asarray(f["SCL"][()]) if self.has_scl and "SCL" in f else None
        n_t = len(dates)
        for b, a in data.items():
            if a.shape[0] != n_t or a.shape[1:] != grid.shape:
                raise UserError(f"{p}: {b} has shape {a.shape}, expected ({n_t}, {grid.height}, {grid.width})")
        event = _event_date(attrs.get("event_date"), p)
        notes: list[str] = []
        if event is None:
            pre = post = np.arange(0)
        else:
            pre, post = split_pre_post(dates, event)
            notes += _check_pre_post(attrs.get("pre_post_dates"), len(pre), len(post), event, p)
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=2)
        return Sen12Patch(
            path=p,
            sensor=self.sensor,
            bands=data,
            dates=dates,
            event_date=event,
            pre=pre,
            post=post,
            grid=grid,
            mask=mask,
            dem=dem,
            scl=scl,
            attrs=attrs,
            warnings=tuple(notes),
        )


class Sen12LandslidesS2(Sen12LandslidesBase):
    """Sentinel-2 patches (``*_s2_*.nc``): 10 bands, SCL, DEM, MASK."""

    sensor = "s2"
    all_bands = S2_BANDS
    has_scl = True


class Sen12LandslidesS1(Sen12LandslidesBase):
    """Sentinel-1 patches (``*_s1asc_*.nc`` / ``*_s1dsc_*.nc``): VV, VH, DEM, MASK."""

    sensor = "s1"
    all_bands = S1_BANDS


def reader_for(path: str | os.PathLike[str]) -> Sen12LandslidesBase:
    """The reader matching a file name ``<region>_<sensor>_<id>.nc`` (``s2``, ``s1asc``, ``s1dsc``)."""
    parts = Path(path).stem.split("_")
    sensor = parts[-2].lower() if len(parts) >= 3 else ""
    if sensor == "s2":
        return Sen12LandslidesS2()
    if sensor.startswith("s1"):
        return Sen12LandslidesS1()
    raise UserError(f"{path}: expected a name <region>_<s2|s1asc|s1dsc>_<id>.nc")


def _event_date(value: str | None, path: Path) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise UserError(f"{path}: event_date {value!r} is not a date YYYY-MM-DD") from None


def _check_pre_post(value: str | None, n_pre: int, n_post: int, event: dt.date, path: Path) -> list[str]:
    """A note when the file's ``pre_post_dates`` attribute disagrees with the split by the time axis."""
    if not value:
        return []
    try:
        claimed = ast.literal_eval(value)
        pre, post = int(claimed["pre"]), int(claimed["post"])
    except (ValueError, SyntaxError, KeyError, TypeError):
        return [f"{path.name}: pre_post_dates {value!r} not understood; split by the time axis instead"]
    if (pre, post) == (n_pre, n_post):
        return []
    return [
        f"{path.name}: pre_post_dates says {pre} pre + {post} post, but the time axis has {n_pre} date(s) before "
        f"the event date {event} and {n_post} on or after it; using the time axis"
    ]


def _grid(f: Any, path: Path) -> Grid:
    x = np.asarray(f["x"][()], dtype=np.float64)
    y = np.asarray(f["y"][()], dtype=np.float64)
    if x.size < 2 or y.size < 2:
        raise UserError(f"{path}: x/y coordinates need at least 2 values each")
    sr = f["spatial_ref"].attrs if "spatial_ref" in f else {}
    crs = _text(sr.get("crs_wkt", sr.get("spatial_ref", ""))) or _text(f.attrs.get("crs", ""))
    if not crs:
        raise UserError(f"{path}: no CRS (no spatial_ref variable and no crs attribute)")
    gt = _text(sr.get("GeoTransform", "")).split()
    if len(gt) == 6:
        c, a, b, f_, d, e = (float(v) for v in gt)
        transform = Affine(a, b, c, d, e, f_)
    else:  # CF coordinates are pixel centres
        dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
        transform = Affine(dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2)
    return Grid(crs, transform, int(x.size), int(y.size))
