"""Reading any raster onto a target grid, and writing Cloud-Optimized GeoTIFFs block by block.

Reading: :class:`RasterOnGrid` opens a raster (any CRS, any resolution) as a virtual warped
dataset (``rasterio.vrt.WarpedVRT``) on a target :class:`~common.geo.grid.Grid` and reads windows of
it as float32 with nodata as NaN. Nothing is reprojected up front, so a 10 m Sentinel-2 scene or a
large DEM is read block by block in bounded memory. Use ``resampling="bilinear"`` (or ``"cubic"``) for
continuous data (reflectance, elevation) and ``"nearest"`` (or ``"mode"``) for classes (SCL, masks).
:func:`read_raster` reads one band of a raster as it is stored (native dtype, own grid).

Writing: :class:`CogWriter` streams windows into a temporary tiled GeoTIFF beside the target and,
on a clean exit, converts it to a Cloud-Optimized GeoTIFF (GDAL's COG driver: tiled, with
overviews) and renames it onto the target atomically; on an exception nothing is left behind.
:func:`write_cog` writes a whole in-memory array; :func:`reproject_to_cog` warps a raster file onto
a grid and writes it as a COG, block by block. Every written raster carries CRS, transform and nodata.

Errors a user can fix (missing file, unreadable or truncated raster, raster without CRS, raster
not overlapping the grid) raise a one-line :class:`common.cli.UserError` naming the path.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import cv2
import numpy as np
import rasterio
import rasterio.shutil
from pyproj import Transformer
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from common.atomic import atomic_path, clean_stale_folder, staging_prefix
from common.errors import UserError
from common.geo._dataset import PathLike, open_raster, read_errors
from common.geo.grid import Grid, coverage_fraction, iter_windows
from common.geo.style import hex_rgba, write_qml

__all__ = ["RasterOnGrid", "RasterData", "read_raster", "CogWriter", "write_cog", "reproject_to_cog"]

# rasterio 1.4 fails to build a WarpedVRT with tolerance=0 and an explicit transform; a tolerance
# this small makes GDAL's approximate transformer transform every pixel exactly (checked: windowed
# reads then equal whole reads bit for bit).
_EXACT_TOLERANCE = 1e-9
#: Positional tolerance of a whole-grid warp (``RasterOnGrid(prewarp=True)``), px: GDAL's approximate transformer
#: keeps every pixel's source position within 1/1000 of a pixel of the exact one (a DEM at 30 m onto 10 m moved by
#: at most 0.007 m on the 10980 px scene of ``benchmarks/scene_read_bench.py``), 5x faster than transforming each
#: pixel; the warp runs once, so windows of it agree with each other whatever the tolerance.
_PREWARP_TOLERANCE = 1e-3
#: Resamplings that :class:`RasterOnGrid` evaluates itself on a raster whose pixels are whole blocks of the grid's.
_UPSAMPLED = (Resampling.nearest, Resampling.bilinear)


def _resampling(value: str | Resampling) -> Resampling:
    if isinstance(value, Resampling):
        return value
    try:
        return Resampling[str(value).lower()]
    except KeyError:
        names = ", ".join(r.name for r in Resampling if r.value < 100)
        raise ValueError(f"unknown resampling {value!r}; expected one of {names}") from None


def _window(window: Window | None, grid: Grid) -> Window:
    if window is None:
        return grid.full_window()
    if not isinstance(window, Window):
        window = Window.from_slices(*window) if len(window) == 2 else Window(*window)
    c, r, w, h = (int(v) for v in (window.col_off, window.row_off, window.width, window.height))
    if (c, r, w, h) != (window.col_off, window.row_off, window.width, window.height):
        raise ValueError(f"window offsets and sizes must be whole pixels, got {window}")
    if w < 1 or h < 1 or c < 0 or r < 0 or c + w > grid.width or r + h > grid.height:
        raise ValueError(f"window {window} is outside the {grid.height}x{grid.width} grid")
    return Window(c, r, w, h)


def _kernel_scales(src: rasterio.io.DatasetReader, grid: Grid) -> tuple[float, float]:
    """Destination pixels per source pixel along x and y near the middle of the overlap.

    GDAL's warper otherwise estimates this per processing chunk, so a windowed read could use a
    slightly different resampling kernel from a whole read. Fixing it makes them equal.
    """
    to_src = Transformer.from_crs(grid.crs, src.crs, always_xy=True)
    to_dst = Transformer.from_crs(src.crs, grid.crs, always_xy=True)
    cx, cy = grid.transform @ (grid.width / 2, grid.height / 2)
    sx, sy = to_src.transform(cx, cy)
    col, row = ~src.transform @ (sx, sy)
    if not (math.isfinite(col) and math.isfinite(row) and 0 <= col <= src.width and 0 <= row <= src.height):
        col, row = src.width / 2, src.height / 2
    cols = np.array([col, col + 1.0, col])
    rows = np.array([row, row, row + 1.0])
    xs, ys = src.transform @ (cols, rows)
    dx, dy = to_dst.transform(xs, ys)
    pc, pr = ~grid.transform @ (np.asarray(dx), np.asarray(dy))
    xscale = float(math.hypot(pc[1] - pc[0], pr[1] - pr[0]))
    yscale = float(math.hypot(pc[2] - pc[0], pr[2] - pr[0]))
    if not (math.isfinite(xscale) and math.isfinite(yscale) and xscale > 0 and yscale > 0):
        return 1.0, 1.0
    return xscale, yscale


class RasterOnGrid:
    """A raster file seen on a target grid; read windows as float32 with nodata as NaN.

    ``with RasterOnGrid(path, grid, resampling="bilinear") as r: block = r.read(window)``

    * ``path``: any GDAL-readable raster with a CRS (GeoTIFF/COG, VRT, ``/vsicurl/`` URL).
    * ``grid``: the target grid; the raster is reprojected/resampled onto it on the fly.
    * ``resampling``: ``"bilinear"``/``"cubic"``/``"average"`` for continuous values, ``"nearest"``/
      ``"mode"`` for classes. When the target is coarser than the source, GDAL widens the kernel
      (bilinear then averages over the source pixels under each target pixel); that widened kernel
      is not exact on sloping planes, so for a DEM going to coarser pixels prefer ``"cubic"`` (a
      30-degree plane came out within 0.03 degrees with cubic, 0.5 with bilinear).
    * ``bands``: 1-based band number(s). ``None`` (all bands) or a sequence: ``read`` returns
      ``(bands, rows, cols)``; an int: ``read`` returns ``(rows, cols)``.
    * ``exact``: transform every pixel's coordinates exactly (default), so windowed reads equal a
      whole-grid read bit for bit (no seams between tiles). ``exact=False`` uses GDAL's linear
      approximation (error <= 1/8 pixel), about 3x faster for cross-CRS reads; same-CRS reads are
      exact either way.
    * ``min_coverage``: fail with a ``UserError`` unless the raster covers at least this fraction of
      the grid (0..1); a raster that does not overlap the grid at all always fails.
    * ``direct``: a raster whose pixels already are the grid's (same CRS and pixel size, origin a whole
      number of pixels away: a 10 m band on a 10 m scene grid or a block of it) is read straight from the
      file, without the warper, whatever the resampling (every kernel evaluated at a pixel's own centre
      gives that pixel: the same values; 4-5x faster per window). A raster whose pixels are whole blocks of
      the grid's (same CRS, pixel size an integer multiple, origin on a grid pixel corner: a 20 m or 60 m
      band on a 10 m grid) is read at its own resolution and upsampled here for ``"nearest"`` (the same
      values) and ``"bilinear"`` (GDAL's rule: NaN where the pixel's own source pixel is nodata, else the
      weights renormalised over the valid neighbours; the warper's values bit for bit at factor 2, within
      1e-3 of the stored unit at others (OpenCV's float32 weights); 10x+ faster per window). Not for rasters
      with an internal mask or alpha band (the warper honours them). ``direct=False`` always warps.
    * ``prewarp``: a raster that still needs warping (another CRS, a finer source) is warped onto the whole
      grid once, on entry (GDAL's warper on both cores, positions within :data:`_PREWARP_TOLERANCE` px of
      exact), into a temporary tiled GeoTIFF removed on exit, and windows are read from that file. For a
      raster read over the whole grid in many windows (a DEM in another CRS under a scene): 4 bytes per
      grid pixel and band of temporary disk, and the warp's cost paid once instead of per window.

    Values are the stored values (no scale/offset applied; see ``scales``/``offsets``). Target pixels
    with no valid source pixel (outside the raster, or source nodata under the whole kernel) are NaN.
    """

    def __init__(
        self,
        path: PathLike,
        grid: Grid,
        resampling: str | Resampling = "bilinear",
        bands: int | Sequence[int] | None = None,
        *,
        exact: bool = True,
        min_coverage: float = 0.0,
        direct: bool = True,
        prewarp: bool = False,
    ) -> None:
        self.path = path
        self.grid = grid
        self.resampling = _resampling(resampling)
        self.bands = bands
        self.exact = exact
        self.min_coverage = float(min_coverage)
        self.direct = direct
        self.prewarp = prewarp
        self._stack = contextlib.ExitStack()
        self._vrt: WarpedVRT | None = None
        self._src: Any = None
        #: ``(fx, fy, cols, rows)`` of :func:`pixel_blocks` where the file is read without the warper
        self._blocks: tuple[int, int, int, int] | None = None
        self._indexes: list[int] = []
        #: band numbers and nodata of the file ``_src`` that direct reads read (a prewarped copy has its own)
        self._read_indexes: list[int] = []
        self._read_nodata: float | None = None

    def __enter__(self) -> RasterOnGrid:
        try:
            src = self._stack.enter_context(open_raster(self.path))
            try:
                self.src_grid: Grid | None = Grid(src.crs, src.transform, src.width, src.height)
            except UserError:  # a rotated or south-up source is fine to warp, it just has no Grid
                self.src_grid = None
            count = src.count
            if self.bands is None:
                indexes = list(range(1, count + 1))
            elif isinstance(self.bands, (int, np.integer)):
                indexes = [int(self.bands)]
            else:
                indexes = [int(b) for b in self.bands]
            bad = [b for b in indexes if not 1 <= b <= count]
            if bad or not indexes:
                raise UserError(f"raster {self.path} has bands 1..{count}; asked for band(s) {bad or self.bands}")
            self._indexes = indexes
            cover = coverage_fraction(self.grid, tuple(src.bounds), src.crs)
            if cover <= 0.0 or cover < self.min_coverage:
                raise UserError(
                    f"raster {self.path} covers {cover:.1%} of the target grid; expected at least "
                    f"{max(self.min_coverage, 1e-9):.1%} (is it the right area / CRS?)"
                )
            self.src_nodata = src.nodata
            self.src_dtype = src.dtypes[0]
            self.descriptions = tuple(src.descriptions[i - 1] for i in indexes)
            self.scales = tuple(src.scales[i - 1] for i in indexes)
            self.offsets = tuple(src.offsets[i - 1] for i in indexes)
            self.tags = src.tags()
            if self.direct and self.src_grid is not None and _no_internal_mask(src, indexes):
                blocks = pixel_blocks(self.src_grid, self.grid)
                if blocks is not None and (blocks[:2] == (1, 1) or self.resampling in _UPSAMPLED):
                    self._read_from(src, blocks, indexes, src.nodata)  # no warper to set up
                    return self
            if self.prewarp:
                self._read_from(self._warp_whole(src), (1, 1, 0, 0), list(range(1, len(indexes) + 1)), np.nan)
                return self
            tolerance = _EXACT_TOLERANCE if self.exact else 0.125
            self._vrt = self._stack.enter_context(self._warped(src, tolerance))
        except BaseException:
            self._stack.close()
            raise
        return self

    def _read_from(self, src: Any, blocks: tuple[int, int, int, int], indexes: list[int], nodata: Any) -> None:
        self._src, self._blocks, self._read_indexes, self._read_nodata = src, blocks, indexes, nodata

    def _warped(self, src: rasterio.io.DatasetReader, tolerance: float, **options: str) -> WarpedVRT:
        """``src`` as a virtual dataset on the grid (float32, NaN nodata), the kernel fixed for the whole grid."""
        xscale, yscale = _kernel_scales(src, self.grid)
        return WarpedVRT(
            src,
            crs=self.grid.crs,
            transform=self.grid.transform,
            width=self.grid.width,
            height=self.grid.height,
            resampling=self.resampling,
            src_nodata=src.nodata,
            nodata=np.nan,
            dtype="float32",
            tolerance=tolerance,
            XSCALE=repr(xscale),
            YSCALE=repr(yscale),
            **options,
        )

    def _warp_whole(self, src: rasterio.io.DatasetReader) -> Any:
        """The asked bands warped onto the whole grid, once, into a temporary tiled GeoTIFF (float32, NaN
        nodata, removed on exit); returns it open for reading."""
        folder = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="landslide-prewarp-"))
        path = Path(folder) / "warped.tif"
        profile = self.grid.to_profile("float32", float("nan"), len(self._indexes))
        profile.update(compress=None, bigtiff="IF_SAFER")  # read back at memory speed, removed on exit
        if profile["tiled"]:
            profile.update(blockxsize=512, blockysize=512)
        with (
            self._warped(src, _PREWARP_TOLERANCE, NUM_THREADS="ALL_CPUS") as vrt,
            rasterio.open(path, "w", **profile) as out,
        ):
            for win in iter_windows(self.grid, 512):
                with read_errors(self.path):
                    out.write(vrt.read(self._indexes, window=win), window=win)
        return self._stack.enter_context(rasterio.open(path))

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the virtual dataset and the source file (and remove a prewarped copy)."""
        self._vrt = self._src = None
        self._stack.close()

    @property
    def count(self) -> int:
        """Number of bands ``read`` returns."""
        return len(self._indexes)

    def read(self, window: Window | None = None) -> np.ndarray:
        """Read ``window`` of the target grid (``None``: the whole grid) as float32, nodata as NaN.

        Shape ``(rows, cols)`` when ``bands`` was an int, else ``(count, rows, cols)`` in the order of
        ``bands``. The window must lie inside the grid (see :func:`~common.geo.grid.iter_windows`).
        """
        if self._vrt is None and self._src is None:
            raise RuntimeError("RasterOnGrid.read outside its 'with' block")
        win = _window(window, self.grid)
        with read_errors(self.path):
            if self._blocks is None:
                data = self._vrt.read(self._indexes, window=win)
            elif self._blocks[:2] == (1, 1):
                data = self._read_direct(win)
            else:
                data = self._read_upsampled(win)
        if isinstance(self.bands, (int, np.integer)):
            return data[0]
        return data

    def _read_file(self, cols: tuple[int, int], rows: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The file's pixels ``[c0, c1) x [r0, r1)`` as float32 ``(bands, rows, cols)`` with a validity mask."""
        (c0, c1), (r0, r1) = cols, rows
        win = Window(c0, r0, c1 - c0, r1 - r0)
        data = self._src.read(self._read_indexes, window=win, out_dtype="float32")
        valid = np.isfinite(data)
        if self._read_nodata is not None and not np.isnan(self._read_nodata):
            valid &= data != np.float32(self._read_nodata)
        return data, valid

    def _read_direct(self, win: Window) -> np.ndarray:
        """``win`` of the grid read from the file's own pixels (``cols``/``rows`` of :func:`pixel_blocks` away):
        float32, nodata and pixels outside the file NaN (what the warper gives on an aligned grid, without it)."""
        _, _, ox, oy = self._blocks  # type: ignore[misc]
        c, r, w, h = int(win.col_off) - ox, int(win.row_off) - oy, int(win.width), int(win.height)
        out = np.full((len(self._indexes), h, w), np.nan, dtype=np.float32)
        c0, c1 = max(c, 0), min(c + w, self._src.width)
        r0, r1 = max(r, 0), min(r + h, self._src.height)
        if c0 < c1 and r0 < r1:
            data, valid = self._read_file((c0, c1), (r0, r1))
            data[~valid] = np.nan
            out[:, r0 - r : r1 - r, c0 - c : c1 - c] = data
        return out

    def _read_upsampled(self, win: Window) -> np.ndarray:
        """``win`` of the grid from a file whose pixels are ``fx`` x ``fy`` blocks of the grid's, read at its own
        resolution and upsampled: nearest repeats each pixel; bilinear interpolates between pixel centres (OpenCV,
        half-pixel centres as GDAL), NaN where the grid pixel's own source pixel is invalid, elsewhere the
        weights renormalised over the valid neighbours (GDAL's warper's rule). Outside the file: NaN."""
        fx, fy, ox, oy = self._blocks  # type: ignore[misc]
        c, r, w, h = (int(v) for v in (win.col_off, win.row_off, win.width, win.height))
        out = np.full((len(self._indexes), h, w), np.nan, dtype=np.float32)
        xs = _BlockAxis(c, w, ox, fx, self._src.width)
        ys = _BlockAxis(r, h, oy, fy, self._src.height)
        if xs.empty or ys.empty:
            return out
        data, valid = self._read_file(xs.source, ys.source)
        rows, cols = ys.inside, xs.inside
        own_rows, own_cols = np.ix_(ys.own_pixels(), xs.own_pixels())  # each grid pixel's own source pixel
        if self.resampling == Resampling.nearest:
            data[~valid] = np.nan
            out[:, rows, cols] = data[:, own_rows, own_cols]
            return out
        size = (data.shape[2] * fx, data.shape[1] * fy)  # OpenCV's (width, height)
        for i in range(len(data)):
            if valid[i].all():
                up = cv2.resize(data[i], size, interpolation=cv2.INTER_LINEAR)[ys.big, xs.big]
            else:
                weights = valid[i].astype(np.float32)
                num = cv2.resize(np.where(valid[i], data[i], np.float32(0)), size, interpolation=cv2.INTER_LINEAR)
                den = cv2.resize(weights, size, interpolation=cv2.INTER_LINEAR)
                own = valid[i][own_rows, own_cols]
                with np.errstate(invalid="ignore", divide="ignore"):
                    up = np.where(own, num[ys.big, xs.big] / den[ys.big, xs.big], np.nan)
            out[i, rows, cols] = up
        return out


class _BlockAxis:
    """One axis of a window on a grid whose source pixels are ``factor`` grid pixels wide, the source's first
    pixel starting ``origin`` grid pixels from the grid's: which grid pixels lie on the source (``inside``, a
    slice of the window), which source pixels bilinear needs (``source``: ``[lo, hi)``), where those grid pixels
    sit in the source block upsampled by ``factor`` (``big``), and each one's own source pixel."""

    def __init__(self, start: int, n: int, origin: int, factor: int, size: int) -> None:
        self.factor = factor
        first = max(start, origin)  # grid pixels on the source: origin .. origin + size * factor - 1
        last = min(start + n, origin + size * factor) - 1
        self.empty = first > last
        if self.empty:
            return
        self.inside = slice(first - start, last - start + 1)
        # source-pixel-centre coordinate of a grid pixel's centre: (j - origin + 0.5) / factor - 0.5
        lo = math.floor((first - origin + 0.5) / factor - 0.5)
        hi = math.floor((last - origin + 0.5) / factor - 0.5) + 1
        self.lo, hi = max(lo, 0), min(hi, size - 1)
        self.source = (self.lo, hi + 1)
        self.first, self.last = first - origin, last - origin  # in grid pixels from the source's first pixel
        self.big = slice(self.first - self.lo * factor, self.last - self.lo * factor + 1)

    def own_pixels(self) -> np.ndarray:
        """Index, in the source block read, of each inside grid pixel's own source pixel."""
        return np.arange(self.first, self.last + 1) // self.factor - self.lo


def pixel_blocks(src: Grid, grid: Grid) -> tuple[int, int, int, int] | None:
    """``(fx, fy, cols, rows)`` where every pixel of ``src`` is a block of ``fx`` x ``fy`` pixels of ``grid``
    (same CRS, ``src``'s pixel sizes whole multiples of ``grid``'s) and ``src``'s origin lies on a corner of
    ``grid``'s pixels, ``cols`` / ``rows`` grid pixels from ``grid``'s origin (within 1e-6 px); else None (the
    raster needs warping). ``(1, 1, cols, rows)``: the raster already is on the grid's pixels."""
    a, b = src.transform, grid.transform
    if src.crs != grid.crs:
        return None
    fx, fy = a.a / b.a, a.e / b.e
    if fx < 1 - 1e-9 or fy < 1 - 1e-9 or abs(fx - round(fx)) > 1e-9 * fx or abs(fy - round(fy)) > 1e-9 * fy:
        return None
    cols, rows = (a.c - b.c) / b.a, (a.f - b.f) / b.e
    if abs(cols - round(cols)) > 1e-6 or abs(rows - round(rows)) > 1e-6:
        return None
    return round(fx), round(fy), round(cols), round(rows)


def _no_internal_mask(src: rasterio.io.DatasetReader, indexes: Sequence[int]) -> bool:
    """True when the bands' validity comes from their nodata value only (no mask band, no alpha)."""
    ok = {MaskFlags.all_valid, MaskFlags.nodata}
    return all(set(src.mask_flag_enums[i - 1]) <= ok for i in indexes)


#: Dataset tag naming the classes of a categorical (class-code) raster: JSON ``{"0": "shale", "1": "granite"}``.
CLASSES_TAG = "CLASSES"


def class_names(tags: Mapping[str, str], path: PathLike) -> dict[int, str] | None:
    """A class raster's legend ``{code: name}`` from its :data:`CLASSES_TAG` dataset tag; ``None`` without one."""
    raw = tags.get(CLASSES_TAG)
    if raw is None:
        return None
    try:
        return {int(k): str(v) for k, v in json.loads(raw).items()}
    except (ValueError, AttributeError) as e:
        raise UserError(f"raster {path}: tag {CLASSES_TAG} is not a JSON object of class code to name ({e})") from e


class RasterData(NamedTuple):
    """One band as stored: ``array (height, width)`` in the file's dtype, its ``grid``, and ``nodata`` (or None)."""

    array: np.ndarray
    grid: Grid
    nodata: float | None


def read_raster(path: PathLike, band: int = 1) -> RasterData:
    """Read band ``band`` (1-based) of a raster whole, in its own grid and dtype (no resampling).

    Pixels equal to ``nodata`` are left as they are (compare against ``RasterData.nodata``); use
    :class:`RasterOnGrid` for float32 with NaN, another grid, or bounded memory.
    """
    with open_raster(path) as src:
        if not 1 <= band <= src.count:
            raise UserError(f"raster {path} has bands 1..{src.count}; asked for band {band}")
        grid = Grid(src.crs, src.transform, src.width, src.height)
        with read_errors(path):
            array = src.read(band)
        return RasterData(array, grid, src.nodata)


def _check_nodata(nodata: float, dtype: np.dtype) -> None:
    if dtype.kind == "f":
        return
    if isinstance(nodata, float) and (math.isnan(nodata) or not nodata.is_integer()):
        raise ValueError(f"nodata {nodata!r} cannot be stored in {dtype.name}; pick a whole number in its range")
    info = np.iinfo(dtype)
    if not info.min <= nodata <= info.max:
        raise ValueError(f"nodata {nodata!r} is outside the range of {dtype.name} ({info.min}..{info.max})")


_LIBTIFF_LINE = re.compile(rb"^_?tiff\w*: |^TIFF\w+: ", re.IGNORECASE)


@contextlib.contextmanager
def _quiet_libtiff() -> Iterator[None]:
    """libtiff prints an I/O failure (``_tiffWriteProc: No space left on device.``) straight to the C stderr
    before GDAL raises it as an exception, which the commands report in their own line: while GDAL writes,
    fd 2 goes to a temporary file; afterwards its lines come back, less libtiff's."""
    fd = 2  # the C library's stderr, whatever Python's sys.stderr is
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no fd 2 at all
        yield
        return
    try:
        held = tempfile.TemporaryFile()
    except OSError:
        os.close(saved)
        yield
        return
    with held:
        os.dup2(held.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True) if not _LIBTIFF_LINE.match(line)]
            if kept:
                os.write(fd, b"".join(kept))


@contextlib.contextmanager
def block_cache(mb: int) -> Iterator[None]:
    """GDAL's raster block cache capped at ``mb`` MB inside the block (``GDAL_CACHEMAX``), for every thread of the
    process; GDAL's own default is 5 % of the machine's RAM, which grows with the machine, not with the work. An
    explicit ``GDAL_CACHEMAX`` in the environment wins (nothing is changed), as does ``mb <= 0``."""
    if mb <= 0 or "GDAL_CACHEMAX" in os.environ:
        yield
        return
    with rasterio.Env(GDAL_CACHEMAX=int(mb) << 20):  # rasterio hands it to GDALSetCacheMax64: bytes
        yield


class CogWriter:
    """Write a raster window by window, ending as a Cloud-Optimized GeoTIFF at ``path``.

    ``with CogWriter(path, grid, "float32", nodata=np.nan) as w: w.write(block, window)``

    * Windows go into a temporary tiled GeoTIFF beside ``path`` (``.{name}.*.part.tif``); pixels never
      written read back as ``nodata``. Memory stays bounded by the blocks you pass plus GDAL's cache.
    * On a clean exit it is converted with GDAL's COG driver (``blocksize`` tiles, ``compress``,
      internal overviews down to one tile, resampled with ``overview_resampling``: by default
      ``"average"`` for float data and ``"nearest"`` for integer (class) data), written under a
      temporary name and renamed onto ``path`` atomically. On an exception both temporaries are
      removed and an existing ``path`` is left untouched.
    * ``nodata`` is required (NaN is allowed for float dtypes); ``tags`` are dataset metadata
      (``{"units": "degrees"}``); ``band_descriptions`` name the bands (default: the ``long_name`` or
      ``band`` tag for one band) and ``units`` give each band's unit (default: the ``units`` tag).
    * Styles QGIS reads: ``colormap`` ``{code: "#rrggbb[aa]"}`` is the first band's colour table
      (uint8/uint16; GeoTIFF keeps RGB, not alpha), ``qml`` is written as the ``.qml`` sidecar beside ``path`` (see
      :mod:`common.geo.style`) when the raster is complete.
    * ``cache_mb``: GDAL's block cache while writing and converting (``GDAL_CACHEMAX``, in MB; 0 keeps
      GDAL's default of 5% of RAM, which can hold most of a scene). With 64 MB, writing and converting
      an 8192 x 8192 float32 raster (268 MB) peaked ~115 MB above the process's baseline (~390 MB
      with GDAL's default on a 24 GB machine), at the same speed.
    """

    def __init__(
        self,
        path: PathLike,
        grid: Grid,
        dtype: Any,
        nodata: float,
        count: int = 1,
        tags: Mapping[str, Any] | None = None,
        *,
        band_descriptions: Sequence[str] | None = None,
        units: str | Sequence[str] | None = None,
        colormap: Mapping[int, str] | None = None,
        qml: str | None = None,
        blocksize: int = 512,
        compress: str = "deflate",
        overview_resampling: str | None = None,
        cache_mb: int = 64,
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.dtype = np.dtype(dtype)
        if nodata is None:
            raise ValueError(f"CogWriter for {self.path} needs a nodata value (NaN is fine for float dtypes)")
        _check_nodata(nodata, self.dtype)
        self.nodata = nodata
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.count = int(count)
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        if band_descriptions is not None and len(band_descriptions) != self.count:
            raise ValueError(f"expected {self.count} band descriptions, got {len(band_descriptions)}")
        if band_descriptions is None and self.count == 1 and (self.tags.get("long_name") or self.tags.get("band")):
            band_descriptions = [self.tags.get("long_name") or self.tags["band"]]
        self.band_descriptions = band_descriptions
        if units is None:
            units = self.tags.get("units")
        self.units = [units] * self.count if isinstance(units, str) else list(units or [])
        if self.units and len(self.units) != self.count:
            raise ValueError(f"expected {self.count} band units, got {len(self.units)}")
        if colormap is not None and self.dtype not in (np.dtype("uint8"), np.dtype("uint16")):
            raise ValueError(f"a colour table needs a uint8 or uint16 raster, not {self.dtype.name} ({self.path})")
        self.colormap = dict(colormap or {})
        self.qml = qml
        if blocksize % 16 or blocksize < 16:
            raise ValueError(f"blocksize must be a multiple of 16, got {blocksize}")
        self.blocksize = int(blocksize)
        self.compress = compress
        self.overview_resampling = overview_resampling or ("average" if self.dtype.kind == "f" else "nearest")
        _resampling(self.overview_resampling)
        self.cache_mb = int(cache_mb)
        self._part: Path | None = None
        self._dst: Any = None
        self._env: rasterio.Env | None = None

    def __enter__(self) -> CogWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # rasterio hands GDAL_CACHEMAX to GDALSetCacheMax64, i.e. in bytes
        self._env = rasterio.Env(GDAL_CACHEMAX=self.cache_mb << 20) if self.cache_mb else rasterio.Env()
        self._env.__enter__()
        clean_stale_folder(self.path.parent)
        fd, name = tempfile.mkstemp(prefix=staging_prefix(self.path.name), suffix=".part.tif", dir=self.path.parent)
        os.close(fd)
        self._part = Path(name)
        profile = self.grid.to_profile(self.dtype, self.nodata, self.count)
        block = min(self.blocksize, 256)
        profile.update(tiled=True, blockxsize=block, blockysize=block, compress="deflate", zlevel=1, bigtiff="IF_SAFER")
        try:
            self._dst = rasterio.open(self._part, "w", **profile)
            if self.tags:
                self._dst.update_tags(**self.tags)
            for i, desc in enumerate(self.band_descriptions or (), start=1):
                self._dst.set_band_description(i, desc)
            for i, unit in enumerate(self.units, start=1):
                self._dst.set_band_unit(i, unit)
            if self.colormap:
                self._dst.write_colormap(1, {int(k): hex_rgba(v) for k, v in self.colormap.items()})
        except BaseException:
            self._cleanup()
            raise
        return self

    def write(self, array: np.ndarray, window: Window | None = None) -> None:
        """Write ``array`` at ``window`` (``None``: the whole grid).

        ``array`` is ``(rows, cols)`` when ``count == 1``, else ``(count, rows, cols)``, matching the
        window's size. Float input written to an integer dtype has NaN replaced by ``nodata``;
        values outside the dtype's range are an error rather than wrapped silently.
        """
        if self._dst is None:
            raise RuntimeError(f"CogWriter({self.path}).write outside its 'with' block")
        win = _window(window, self.grid)
        arr = np.asarray(array)
        if arr.ndim == 2:
            arr = arr[None]
        expected = (self.count, int(win.height), int(win.width))
        if arr.shape != expected:
            raise ValueError(
                f"array shape {np.asarray(array).shape} does not match window {win} x {self.count} band(s)"
            )
        if self.dtype.kind != "f" and arr.dtype.kind == "f":
            nan = np.isnan(arr)
            if nan.any():
                arr = np.where(nan, self.nodata, arr)
        if self.dtype.kind in "iu" and arr.size:
            info = np.iinfo(self.dtype)
            lo, hi = arr.min(), arr.max()
            if lo < info.min or hi > info.max:
                raise ValueError(f"values {lo}..{hi} do not fit {self.dtype.name} for {self.path}")
        with _quiet_libtiff():
            self._dst.write(arr.astype(self.dtype, copy=False), window=win)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            dst, self._dst = self._dst, None
            if dst is not None:
                with _quiet_libtiff():
                    dst.close()
            if exc_type is None:
                with atomic_path(self.path) as tmp, _quiet_libtiff():
                    rasterio.shutil.copy(
                        self._part,
                        tmp,
                        driver="COG",
                        blocksize=self.blocksize,
                        compress=self.compress,
                        overview_resampling=self.overview_resampling,
                        bigtiff="IF_SAFER",
                        num_threads="ALL_CPUS",  # compression on every core: 1.3x on a 10980 px float32 COG
                    )
                if self.qml is not None:
                    write_qml(self.path, self.qml)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        if self._dst is not None:
            with contextlib.suppress(Exception):
                self._dst.close()
            self._dst = None
        if self._part is not None:
            with contextlib.suppress(FileNotFoundError):
                self._part.unlink()
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self._part}.aux.xml").unlink()
            self._part = None
        if self._env is not None:
            env, self._env = self._env, None
            env.__exit__(None, None, None)


def write_cog(
    path: PathLike,
    array: np.ndarray,
    grid: Grid,
    nodata: float,
    *,
    dtype: Any = None,
    tags: Mapping[str, Any] | None = None,
    band_descriptions: Sequence[str] | None = None,
    block_rows: int = 512,
    **cog_options: Any,
) -> Path:
    """Write an in-memory ``(rows, cols)`` or ``(bands, rows, cols)`` array on ``grid`` as a COG; returns ``path``.

    ``dtype`` defaults to the array's. Other keywords go to :class:`CogWriter`.
    """
    arr = np.asarray(array)
    if arr.ndim not in (2, 3) or arr.shape[-2:] != grid.shape:
        raise ValueError(f"array shape {arr.shape} does not match grid shape {grid.shape} for {path}")
    count = 1 if arr.ndim == 2 else arr.shape[0]
    with CogWriter(
        path, grid, dtype or arr.dtype, nodata, count, tags, band_descriptions=band_descriptions, **cog_options
    ) as w:
        for win in iter_windows(grid, block_rows):
            rows = slice(win.row_off, win.row_off + win.height)
            w.write(arr[..., rows, :], win)
    return Path(path)


def reproject_to_cog(
    src_path: PathLike,
    dst_path: PathLike,
    grid: Grid,
    resampling: str | Resampling = "bilinear",
    *,
    bands: Sequence[int] | None = None,
    block: int = 1024,
    **cog_options: Any,
) -> Path:
    """Warp a raster onto ``grid`` and write it as a float32 COG with NaN nodata, block by block; returns ``dst_path``.

    Memory holds one ``block`` x ``block`` window of all selected bands at a time (plus GDAL's
    caches). Band descriptions and dataset tags of the source are kept.
    """
    with RasterOnGrid(src_path, grid, resampling, bands) as r:
        descriptions = [d or "" for d in r.descriptions] if any(r.descriptions) else None
        with CogWriter(
            dst_path, grid, "float32", np.nan, r.count, r.tags, band_descriptions=descriptions, **cog_options
        ) as w:
            for win in iter_windows(grid, block, block):
                w.write(r.read(win), win)
    return Path(dst_path)
