"""Cloud-masked per-pixel median composites, one block (window of the output grid) at a time.

For one window of dates and one block:

1. every observation's bands (:data:`~imagery.change.acquisition.COMPOSITE_BANDS`) and SCL are read onto the
   block of the output grid (:class:`common.geo.RasterOnGrid`: bands bilinear, SCL nearest) and converted to
   reflectance with the item's scale/offset;
2. a pixel is a clear observation when its SCL class is in :data:`CLEAR_SCL` (vegetation, not vegetated,
   water, unclassified; clouds, shadows, cirrus, snow, saturated and nodata are masked: snow after the event
   would read as vegetation loss) and all bands are finite; clouds, cirrus and cloud shadows
   (:data:`CLOUD_SCL`) are grown by one pixel first: their edges are mixed pixels, and bilinear resampling
   onto the output grid spreads a cloud's brightness into its clear neighbours (without the buffer, cloud
   edges read as vegetation loss in the two-zone synthetic test); an item without SCL counts every valid
   pixel as clear (reported by the caller);
3. items of one acquisition (date + orbit) are mosaicked: the first clear pixel wins;
4. NDVI and BSI are computed per acquisition, then each band and index gets the per-pixel median over the
   acquisitions (the median of the index, not the index of the medians: on the Sen12Landslides sample the
   former separates the landslides better, ROC-AUC 0.81 vs 0.79);
5. ``clear_count`` is the number of acquisitions with a clear observation of the pixel. Where it is 0 every
   layer is NaN: no observation is never read as "no change".

Memory per block: ``(acquisitions + 2) x layers x rows x cols x 4`` bytes (512 x 512 px, 10 acquisitions:
about 80 MB), whatever the area's size.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from scipy import ndimage

from common.geo import Grid, RasterOnGrid, transform_geometries
from common.geo.grid import Window
from imagery.change.acquisition import COMPOSITE_BANDS, Observation
from imagery.change.indices import bsi, ndvi

#: SCL classes counted as clear: 4 vegetation, 5 not vegetated, 6 water, 7 unclassified.
CLEAR_SCL: tuple[int, ...] = (4, 5, 6, 7)
#: SCL classes grown by one pixel before masking: 3 cloud shadow, 8 / 9 cloud (medium / high), 10 cirrus.
CLOUD_SCL: tuple[int, ...] = (3, 8, 9, 10)
#: Layers of a composite, in band order of ``pre.tif`` / ``post.tif``.
LAYERS: tuple[str, ...] = (*COMPOSITE_BANDS, "NDVI", "BSI", "clear_count")


#: Readers kept open per process (least recently used closed first): a block reads every item's band files,
#: and opening a file costs more than reading a block of it. Keyed by path, modification time, grid, band.
MAX_OPEN_READERS = 128
_READERS: OrderedDict[tuple[Any, ...], RasterOnGrid] = OrderedDict()


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None  # remote (/vsicurl/...): never rewritten under the same name during a run


def _read(path: str, index: int, grid: Grid, window: Window, resampling: str) -> np.ndarray:
    key = (path, _mtime(path), grid, index, resampling)
    reader = _READERS.get(key)
    if reader is None:
        reader = RasterOnGrid(path, grid, resampling, bands=index).__enter__()
        _READERS[key] = reader
        while len(_READERS) > MAX_OPEN_READERS:
            _READERS.popitem(last=False)[1].close()
    else:
        _READERS.move_to_end(key)
    return reader.read(window)


def close_readers() -> None:
    """Close the readers kept open (end of a run)."""
    while _READERS:
        _READERS.popitem()[1].close()


def read_observation(
    obs: Observation, grid: Grid, window: Window, names: Sequence[str] = COMPOSITE_BANDS
) -> tuple[np.ndarray, np.ndarray]:
    """``(bands (len(names), h, w) float32 reflectance, clear (h, w) bool)`` of one observation on a block."""
    h, w = int(window.height), int(window.width)
    bands = np.empty((len(names), h, w), dtype=np.float32)
    for i, name in enumerate(names):
        f = obs.files[name]
        bands[i] = _read(f.path, f.index, grid, window, "bilinear") * np.float32(f.scale) + np.float32(f.offset)
    clear = np.all(np.isfinite(bands), axis=0)
    if obs.has_scl:
        f = obs.files["SCL"]
        scl = np.nan_to_num(_read(f.path, f.index, grid, window, "nearest"), nan=0).astype(np.int16)
        cloud = ndimage.binary_dilation(np.isin(scl, CLOUD_SCL), structure=np.ones((3, 3), bool))
        clear &= np.isin(scl, CLEAR_SCL) & ~cloud
    return bands, clear


def acquisitions(observations: Sequence[Observation]) -> list[list[Observation]]:
    """Observations grouped by acquisition (date, orbit), in date order."""
    groups: dict[tuple[str, int | None], list[Observation]] = {}
    for obs in observations:
        groups.setdefault(obs.key, []).append(obs)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], -1 if k[1] is None else k[1]))]


def composite_block(observations: Sequence[Observation], grid: Grid, window: Window) -> np.ndarray:
    """The composite of ``observations`` on one block: ``(len(LAYERS), h, w)`` float32 (module docstring)."""
    h, w = int(window.height), int(window.width)
    footprint = grid.subgrid(window)
    per_date: list[np.ndarray] = []
    for group in acquisitions(observations):
        mosaic = np.full((len(COMPOSITE_BANDS), h, w), np.nan, dtype=np.float32)
        for obs in group:
            if not _touches(obs, footprint):
                continue
            bands, clear = read_observation(obs, grid, window)
            fill = clear & np.isnan(mosaic[0])
            mosaic[:, fill] = bands[:, fill]
        if np.isnan(mosaic[0]).all():
            continue
        b2, _b3, b4, b8, b11 = mosaic
        per_date.append(np.concatenate([mosaic, ndvi(b4, b8)[None], bsi(b2, b4, b8, b11)[None]]))
    out = np.full((len(LAYERS), h, w), np.nan, dtype=np.float32)
    if not per_date:
        out[-1] = 0.0
        return out
    stack = np.stack(per_date)  # (dates, layers-1, h, w)
    count = np.isfinite(stack[:, 0]).sum(axis=0)
    seen = count > 0
    out[:-1, seen] = np.nanmedian(stack[:, :, seen], axis=0)
    out[-1] = count.astype(np.float32)
    return out


def band_composite(
    observations: Sequence[Observation], grid: Grid, window: Window, bands: Sequence[str], *, with_ndvi: bool = False
) -> np.ndarray:
    """Per-pixel medians of any ``bands`` (canonical names the observations hold) on one block, as
    :func:`composite_block` makes them (the same clear-pixel rule, mosaic per acquisition, median per band over the
    acquisitions), plus the median of each acquisition's NDVI last with ``with_ndvi``: ``(len(bands) [+ 1], h, w)``
    float32 reflectance, NaN where no acquisition is clear. The inputs of a segmenter (``--imagery-model``)."""
    names = list(dict.fromkeys([*bands, *(("B4", "B8") if with_ndvi else ())]))
    h, w = int(window.height), int(window.width)
    footprint = grid.subgrid(window)
    n_out = len(bands) + int(with_ndvi)
    per_date: list[np.ndarray] = []
    for group in acquisitions(observations):
        mosaic = np.full((len(names), h, w), np.nan, dtype=np.float32)
        for obs in group:
            if not _touches(obs, footprint):
                continue
            values, clear = read_observation(obs, grid, window, names)
            fill = clear & np.isnan(mosaic[0])
            mosaic[:, fill] = values[:, fill]
        if np.isnan(mosaic[0]).all():
            continue
        layers = [mosaic[names.index(b)] for b in bands]
        if with_ndvi:
            layers.append(ndvi(mosaic[names.index("B4")], mosaic[names.index("B8")]))
        per_date.append(np.stack(layers))
    out = np.full((n_out, h, w), np.nan, dtype=np.float32)
    if per_date:
        stack = np.stack(per_date)
        seen = np.isfinite(stack[:, 0]).any(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a band without a clear value where band 0 has one
            out[:, seen] = np.nanmedian(stack[:, :, seen], axis=0)
    return out


def _touches(obs: Observation, block: Grid) -> bool:
    """False when the item's lon/lat footprint misses the block (skips reading it)."""
    box = transform_geometries(shapely.box(*block.bounds), block.crs, "EPSG:4326")
    return bool(obs.footprint.intersects(box))
