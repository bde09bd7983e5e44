"""Terrain factors from a DEM array, with true metres per pixel (so any CRS gives the same answer).

Every function takes ``dem``, a ``(rows, cols)`` array of elevations in metres on a north-up grid
(row 0 = north; NaN = nodata), and, where distances matter, the pixel size in metres ``dy`` and
``dx``: scalars or per-row arrays of shape ``(rows,)`` as returned by
:func:`common.geo.grid.pixel_size_m`. A DEM in EPSG:4326 (pixels of ~1 arc-second) therefore gives
the same slope as the same terrain in UTM. Results are float32 arrays of the DEM's shape.

Neighbourhood conventions (all the 3x3 factors)::

    z1 z2 z3        north up; for row i the centre row's dy[i] and dx[i] are used
    z4 z5 z6
    z7 z8 z9

* Borders: the DEM is padded by edge replication, so border pixels see their own values outside
  the grid (their slope is about half the true slope across the edge). Pixels on the grid edge are
  valid, just biased; crop them if that matters.
* Nodata: NaN propagates, a pixel is NaN when any pixel of its neighbourhood is NaN.

Block-wise processing: :func:`terrain_window` computes a factor for one window of a large DEM
with a halo of neighbouring pixels, giving exactly the values of the whole-array computation, so
a DEM that does not fit in memory can be processed with :func:`common.geo.grid.iter_windows`.
The topographic wetness index needs flow accumulated over the whole catchment, so
:func:`flow_accumulation` and :func:`twi` work on the whole DEM only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
from rasterio.windows import Window

from common.geo.grid import Grid, pixel_size_m

__all__ = [
    "slope",
    "aspect",
    "plan_curvature",
    "profile_curvature",
    "tpi",
    "tri",
    "roughness",
    "flow_accumulation",
    "twi",
    "terrain_window",
]

Spacing = float | np.ndarray

# tan(slope) is clamped to at least this in TWI (0.057 degrees), so flats give a large finite value.
TWI_MIN_TAN_SLOPE = 1e-3


def _dem(dem: np.ndarray) -> np.ndarray:
    arr = np.asarray(dem, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"dem must be a 2-D (rows, cols) array, got shape {np.shape(dem)}")
    return arr


def _spacing(value: Spacing, rows: int, name: str) -> np.ndarray:
    """Pixel size as a ``(rows, 1)`` float64 column, broadcastable over a ``(rows, cols)`` array."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(rows, float(arr))
    if arr.shape != (rows,):
        raise ValueError(f"{name} must be a number or an array of shape ({rows},) (one per row), got {arr.shape}")
    if not (np.isfinite(arr).all() and (arr > 0).all()):
        raise ValueError(f"{name} must be positive metres per pixel")
    return arr[:, None]


class _Neighbourhood:
    """Shifted views of an edge-padded DEM: ``z(di, dj)`` is the neighbour ``di`` rows down, ``dj`` cols right."""

    def __init__(self, dem: np.ndarray, k: int) -> None:
        self.k = k
        self.rows, self.cols = dem.shape
        self.padded = np.pad(dem, k, mode="edge")
        self.nan_pad = np.isnan(self.padded)

    def z(self, di: int, dj: int) -> np.ndarray:
        k = self.k
        return self.padded[k + di : k + di + self.rows, k + dj : k + dj + self.cols]

    def any_nan(self) -> np.ndarray:
        """True where any pixel of the ``(2k+1)^2`` neighbourhood is NaN."""
        k = self.k
        out = np.zeros((self.rows, self.cols), dtype=bool)
        for di in range(-k, k + 1):
            for dj in range(-k, k + 1):
                out |= self.nan_pad[k + di : k + di + self.rows, k + dj : k + dj + self.cols]
        return out


def _finish(values: np.ndarray, nan_mask: np.ndarray) -> np.ndarray:
    out = values.astype(np.float32)
    out[nan_mask] = np.nan
    return out


def _gradient(dem: np.ndarray, dy: Spacing, dx: Spacing) -> tuple[np.ndarray, np.ndarray, _Neighbourhood]:
    """Horn's (1981) gradient: ``(dz/dx east-positive, dz/dy north-positive)``, dimensionless (m/m)."""
    z = _dem(dem)
    ddy, ddx = _spacing(dy, z.shape[0], "dy"), _spacing(dx, z.shape[0], "dx")
    n = _Neighbourhood(z, 1)
    z1, z2, z3 = n.z(-1, -1), n.z(-1, 0), n.z(-1, 1)
    z4, z6 = n.z(0, -1), n.z(0, 1)
    z7, z8, z9 = n.z(1, -1), n.z(1, 0), n.z(1, 1)
    gx = ((z3 + 2 * z6 + z9) - (z1 + 2 * z4 + z7)) / (8 * ddx)
    gy = ((z1 + 2 * z2 + z3) - (z7 + 2 * z8 + z9)) / (8 * ddy)
    return gx, gy, n


def slope(dem: np.ndarray, dy: Spacing, dx: Spacing) -> np.ndarray:
    """Slope in degrees (0 = flat, 90 = vertical), Horn's (1981) 3x3 method.

    ``dz/dx = ((z3 + 2 z6 + z9) - (z1 + 2 z4 + z7)) / (8 dx)``,
    ``dz/dy = ((z1 + 2 z2 + z3) - (z7 + 2 z8 + z9)) / (8 dy)``,
    ``slope = degrees(arctan(hypot(dz/dx, dz/dy)))``; ``dy``, ``dx`` in metres, elevations in metres.
    """
    gx, gy, n = _gradient(dem, dy, dx)
    return _finish(np.degrees(np.arctan(np.hypot(gx, gy))), n.any_nan())


def aspect(dem: np.ndarray, dy: Spacing, dx: Spacing) -> tuple[np.ndarray, np.ndarray]:
    """Aspect as ``(sin, cos)`` of the downslope direction, measured clockwise from north.

    A north-facing slope gives ``(0, 1)``, east-facing ``(1, 0)``, south ``(0, -1)``, west ``(-1, 0)``;
    flat pixels give ``(0, 0)``. Encoding the angle as sine and cosine avoids the 359/1 degree jump.
    From Horn's gradient: ``sin = -dz/dx / |g|``, ``cos = -dz/dy / |g|`` (``dz/dy`` north-positive).
    """
    gx, gy, n = _gradient(dem, dy, dx)
    norm = np.hypot(gx, gy)
    flat = norm == 0
    safe = np.where(flat, 1.0, norm)
    sin = np.where(flat, 0.0, -gx / safe)
    cos = np.where(flat, 0.0, -gy / safe)
    nan = n.any_nan()
    return _finish(sin, nan), _finish(cos, nan)


def _zt_terms(dem: np.ndarray, dy: Spacing, dx: Spacing) -> tuple[np.ndarray, ...]:
    """Zevenbergen & Thorne (1987) partial-quartic terms ``zxx, zyy, zxy, zx, zy`` (y north-positive)."""
    z = _dem(dem)
    ddy, ddx = _spacing(dy, z.shape[0], "dy"), _spacing(dx, z.shape[0], "dx")
    n = _Neighbourhood(z, 1)
    z1, z2, z3 = n.z(-1, -1), n.z(-1, 0), n.z(-1, 1)
    z4, z5, z6 = n.z(0, -1), n.z(0, 0), n.z(0, 1)
    z7, z8, z9 = n.z(1, -1), n.z(1, 0), n.z(1, 1)
    zxx = (z4 + z6 - 2 * z5) / ddx**2  # = 2 D
    zyy = (z2 + z8 - 2 * z5) / ddy**2  # = 2 E
    zxy = (-z1 + z3 + z7 - z9) / (4 * ddx * ddy)  # = F
    zx = (z6 - z4) / (2 * ddx)  # = G
    zy = (z2 - z8) / (2 * ddy)  # = H
    return zxx, zyy, zxy, zx, zy, n.any_nan()


def profile_curvature(dem: np.ndarray, dy: Spacing, dx: Spacing) -> np.ndarray:
    """Profile curvature in 1/m (Zevenbergen & Thorne 1987): curvature along the steepest slope.

    ``-(zxx zx^2 + 2 zxy zx zy + zyy zy^2) / (zx^2 + zy^2)``, i.e. ZT's ``-2(D G^2 + E H^2 + F G H) /
    (G^2 + H^2)`` without ArcGIS's x100. Positive where the slope steepens downhill (convex, flow
    accelerates), negative where it flattens (concave, deposition). 0 on flat pixels.
    """
    zxx, zyy, zxy, zx, zy, nan = _zt_terms(dem, dy, dx)
    p = zx**2 + zy**2
    flat = p == 0
    val = -(zxx * zx**2 + 2 * zxy * zx * zy + zyy * zy**2) / np.where(flat, 1.0, p)
    return _finish(np.where(flat, 0.0, val), nan)


def plan_curvature(dem: np.ndarray, dy: Spacing, dx: Spacing) -> np.ndarray:
    """Plan curvature in 1/m (Zevenbergen & Thorne 1987): curvature across the slope, along the contour.

    ``-(zxx zy^2 - 2 zxy zx zy + zyy zx^2) / (zx^2 + zy^2)`` (ZT's ``2(D H^2 + E G^2 - F G H) /
    (G^2 + H^2)`` with the sign flipped): positive on noses and ridges (contours convex, flow
    diverges), negative in hollows and valleys (flow converges). 0 on flat pixels.
    """
    zxx, zyy, zxy, zx, zy, nan = _zt_terms(dem, dy, dx)
    p = zx**2 + zy**2
    flat = p == 0
    val = -(zxx * zy**2 - 2 * zxy * zx * zy + zyy * zx**2) / np.where(flat, 1.0, p)
    return _finish(np.where(flat, 0.0, val), nan)


def tpi(dem: np.ndarray, radius: int = 1) -> np.ndarray:
    """Topographic position index in metres: elevation minus the mean of its neighbours.

    The neighbours are the ``(2 radius + 1)^2 - 1`` pixels of the square around the pixel (radius 1:
    the 8 neighbours, as ``gdaldem TPI``). Positive on ridges and hilltops, negative in valleys.
    NaN when any pixel of the square is NaN.
    """
    z = _dem(dem)
    r = int(radius)
    if r < 1:
        raise ValueError(f"tpi radius must be >= 1 pixel, got {radius}")
    n = _Neighbourhood(z, r)
    total = np.zeros_like(z)
    for di in range(-r, r + 1):
        for dj in range(-r, r + 1):
            if di or dj:
                total += n.z(di, dj)
    count = (2 * r + 1) ** 2 - 1
    return _finish(z - total / count, n.any_nan())


def tri(dem: np.ndarray) -> np.ndarray:
    """Terrain ruggedness index (Riley et al. 1999) in metres: ``sqrt(sum_i (z_i - z5)^2)`` over the 8 neighbours."""
    z = _dem(dem)
    n = _Neighbourhood(z, 1)
    total = np.zeros_like(z)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                total += (n.z(di, dj) - z) ** 2
    return _finish(np.sqrt(total), n.any_nan())


def roughness(dem: np.ndarray) -> np.ndarray:
    """Roughness in metres: maximum minus minimum elevation of the 3x3 neighbourhood (centre included), as gdaldem."""
    z = _dem(dem)
    n = _Neighbourhood(z, 1)
    hi = z.copy()
    lo = z.copy()
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                np.maximum(hi, n.z(di, dj), out=hi)
                np.minimum(lo, n.z(di, dj), out=lo)
    return _finish(hi - lo, n.any_nan())


# D8 directions (row step, col step) in a fixed order: ties go to the first.
_D8 = ((-1, 0), (0, 1), (1, 0), (0, -1), (-1, 1), (1, 1), (1, -1), (-1, -1))


def _d8_receivers(z: np.ndarray, ddy: np.ndarray, ddx: np.ndarray) -> np.ndarray:
    """Flat index of each pixel's D8 receiver (steepest downhill neighbour), or the pixel itself if none."""
    rows, cols = z.shape
    padded = np.pad(z, 1, mode="constant", constant_values=np.nan)
    best = np.zeros((rows, cols))
    best_dir = np.full((rows, cols), -1, dtype=np.int8)
    diag = np.sqrt(ddx**2 + ddy**2)
    with np.errstate(invalid="ignore"):
        for k, (di, dj) in enumerate(_D8):
            dist = diag if di and dj else (ddy if di else ddx)
            nb = padded[1 + di : 1 + di + rows, 1 + dj : 1 + dj + cols]
            drop = (z - nb) / dist  # NaN where the neighbour is outside the grid or nodata
            better = drop > best
            best = np.where(better, drop, best)
            best_dir[better] = k
    idx = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
    receivers = idx.copy()
    for k, (di, dj) in enumerate(_D8):
        sel = best_dir == k
        receivers[sel] = idx[sel] + di * cols + dj
    return receivers.ravel()


def flow_accumulation(dem: np.ndarray, dy: Spacing, dx: Spacing) -> np.ndarray:
    """D8 upslope contributing area in m^2 (the pixel's own area included), float64, whole DEM.

    Each pixel drains to the one of its 8 neighbours with the steepest drop ``(z - z_n) / distance``
    (distances ``dy``, ``dx`` or the diagonal, in metres; ties go to N, E, S, W, NE, SE, SW, NW in that
    order). Pixels with no lower neighbour inside the grid (pits, flats, the grid's downhill edge)
    are outlets: flow ends there; depressions are not filled, so fill them first for real DEMs where
    this matters. Each pixel contributes its area ``dy * dx``. NaN pixels neither drain nor receive
    and are NaN in the result.

    Vectorised with NumPy: each pixel's distance to its outlet is found by pointer jumping
    (O(N log L)), then areas are passed downstream one distance level at a time (O(N)).
    """
    z = _dem(dem)
    rows, cols = z.shape
    ddy, ddx = _spacing(dy, rows, "dy"), _spacing(dx, rows, "dx")
    receivers = _d8_receivers(z, ddy, ddx)
    n = rows * cols
    itype = np.int32 if n < 2**31 - 1 else np.int64
    receivers = receivers.astype(itype)
    # distance (in steps) from every pixel to its outlet, by pointer jumping
    depth = (receivers != np.arange(n, dtype=itype)).astype(itype)
    nxt = receivers.copy()
    while True:
        nxt2 = nxt[nxt]
        if np.array_equal(nxt2, nxt):
            break
        depth = depth + depth[nxt]
        nxt = nxt2
    acc = np.broadcast_to(ddy * ddx, (rows, cols)).astype(np.float64).ravel()
    order = np.argsort(depth, kind="stable")[::-1]
    sorted_depth = depth[order]
    # boundaries of equal-depth runs in the (descending) sorted order
    cuts = np.flatnonzero(np.diff(sorted_depth)) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [n]))
    for s, e in zip(starts, ends, strict=True):
        if sorted_depth[s] == 0:
            break
        cells = order[s:e]
        np.add.at(acc, receivers[cells], acc[cells])
    out = acc.reshape(rows, cols)
    out[np.isnan(z)] = np.nan
    return out


def twi(dem: np.ndarray, dy: Spacing, dx: Spacing, *, min_tan_slope: float = TWI_MIN_TAN_SLOPE) -> np.ndarray:
    """Topographic wetness index ``ln(a / tan(beta))`` (Beven & Kirkby 1979), dimensionless, whole DEM.

    * ``a``: specific catchment area in metres, the D8 contributing area of :func:`flow_accumulation`
      (m^2, own pixel included) divided by the contour width ``sqrt(dx * dy)``. On a plane sloping
      along a grid axis, row ``i`` below the top edge gets ``a = (i + 1) * dy``.
    * ``beta``: the local Horn slope of :func:`slope`; ``tan(beta)`` is clamped to at least
      ``min_tan_slope`` so flats get a large finite value instead of infinity.

    Higher in valleys and hollows (large ``a``, gentle slope), lower on ridges and steep upper slopes.
    Needs global flow accumulation, so it is computed on the whole DEM (no block-wise version).
    """
    z = _dem(dem)
    rows = z.shape[0]
    ddy, ddx = _spacing(dy, rows, "dy"), _spacing(dx, rows, "dx")
    area = flow_accumulation(z, ddy[:, 0], ddx[:, 0])
    sca = area / np.sqrt(ddx * ddy)
    gx, gy, n = _gradient(z, ddy[:, 0], ddx[:, 0])
    tan_b = np.maximum(np.hypot(gx, gy), float(min_tan_slope))
    with np.errstate(invalid="ignore"):
        val = np.log(sca / tan_b)
    return _finish(val, n.any_nan() | np.isnan(area))


_GLOBAL = {flow_accumulation, twi}


def _required_halo(func: Callable[..., Any], kwargs: dict[str, Any]) -> int:
    if func is tpi:
        return int(kwargs.get("radius", 1))
    return 1


def terrain_window(
    func: Callable[..., Any],
    dem: np.ndarray | Callable[[Window], np.ndarray],
    grid: Grid,
    window: Window,
    *,
    halo: int | None = None,
    spacing: tuple[np.ndarray, np.ndarray] | None = None,
    **kwargs: Any,
) -> Any:
    """Compute terrain factor ``func`` for one ``window`` of a DEM on ``grid``, equal to whole-array results.

    * ``func``: one of this module's neighbourhood factors (:func:`slope`, :func:`aspect`,
      :func:`tpi`, ...); extra ``kwargs`` go to it (e.g. ``radius=3`` for ``tpi``). Not
      :func:`flow_accumulation`/:func:`twi`, which need the whole DEM.
    * ``dem``: the whole DEM array ``(height, width)``, or a callable reading a window of it as a 2-D
      float array with NaN nodata, e.g. ``RasterOnGrid(path, grid, bands=1).read``.
    * ``halo``: pixels read around the window; defaults to what ``func`` needs (1, ``radius`` for TPI).
      Outside the grid the DEM is edge-replicated, exactly as the whole-array functions do.
    * ``spacing``: ``pixel_size_m(grid)``, computed if not given (pass it when looping over windows).

    Returns what ``func`` returns (an array, or a tuple for :func:`aspect`) cropped to the window.
    """
    if func in _GLOBAL:
        raise ValueError(f"{func.__name__} needs the whole DEM (global flow accumulation); call it on the full array")
    need = _required_halo(func, kwargs)
    k = need if halo is None else int(halo)
    if k < need:
        raise ValueError(f"{func.__name__} needs a halo of at least {need} pixels, got {halo}")
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    if r0 < 0 or c0 < 0 or r0 + h > grid.height or c0 + w > grid.width:
        raise ValueError(f"window {window} is outside the {grid.height}x{grid.width} grid")
    rr0, rr1 = max(r0 - k, 0), min(r0 + h + k, grid.height)
    cc0, cc1 = max(c0 - k, 0), min(c0 + w + k, grid.width)
    if callable(dem):
        block = np.asarray(dem(Window(cc0, rr0, cc1 - cc0, rr1 - rr0)), dtype=np.float64)
        if block.shape != (rr1 - rr0, cc1 - cc0):
            raise ValueError(
                f"the DEM reader returned shape {block.shape}, expected a 2-D {(rr1 - rr0, cc1 - cc0)} "
                "window (open it with RasterOnGrid(..., bands=1))"
            )
    else:
        arr = np.asarray(dem)
        if arr.shape != grid.shape:
            raise ValueError(f"dem shape {arr.shape} does not match grid shape {grid.shape}")
        block = arr[rr0:rr1, cc0:cc1].astype(np.float64)
    pads = ((k - (r0 - rr0), k - (rr1 - r0 - h)), (k - (c0 - cc0), k - (cc1 - c0 - w)))
    block = np.pad(block, pads, mode="edge")
    result_rows = np.clip(np.arange(r0 - k, r0 + h + k), 0, grid.height - 1)
    out_slice = (slice(k, k + h), slice(k, k + w))
    params = inspect.signature(func).parameters
    if "dy" in params:
        dy_all, dx_all = spacing if spacing is not None else pixel_size_m(grid)
        result = func(block, dy=np.asarray(dy_all)[result_rows], dx=np.asarray(dx_all)[result_rows], **kwargs)
    else:
        result = func(block, **kwargs)
    if isinstance(result, tuple):
        return tuple(r[out_slice] for r in result)
    return result[out_slice]
