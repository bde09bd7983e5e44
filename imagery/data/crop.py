"""Cut a Sentinel-2 scene on disk to a lon/lat box: only the part an assessment needs.

:func:`crop_scene` reads each band of a :class:`~imagery.data.sentinel2.SceneSource` (a folder, a ``.SAFE``,
a multi-band GeoTIFF or a STAC item) window by window over the box and writes one COG per band at the
band's own resolution (``B02.tif`` ... ``B8A.tif``, ``SCL.tif``), the box snapped outwards to whole pixels
of the coarsest band so that every band covers the same extent, plus ``scene.json`` carrying the scene's
id, date, product and each band's scale and offset. The result is a band folder that
:func:`imagery.data.sentinel2.open_scene` reads exactly like the original (same values, same units), the
same layout :func:`imagery.data.stac.write_box` writes for a fetched scene.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.atomic import atomic_write
from common.geo import CogWriter, Grid, RasterOnGrid, iter_windows
from imagery.data.sentinel2 import SCENE_JSON, SceneSource
from imagery.data.stac import FILE_NAMES, _box_grid


def crop_scene(scene: SceneSource, bbox: Sequence[float], out: str | os.PathLike[str]) -> Path:
    """Write the ``bbox`` (W, S, E, N degrees) of ``scene`` into the folder ``out``; returns ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    bands = [*scene.bands, *(["SCL"] if scene.has_scl else [])]
    grids = {b: Grid.from_raster(scene.files[b].path) for b in bands}
    coarsest = max(g.res[0] for g in grids.values())
    snap = (
        coarsest if all(abs(coarsest / g.res[0] - round(coarsest / g.res[0])) < 1e-9 for g in grids.values()) else None
    )
    meta_bands = {}
    crs = None
    for band in bands:
        ref = scene.files[band]
        sub = _box_grid(grids[band], bbox, snap)
        crs = crs or sub.crs
        target = folder / f"{FILE_NAMES[band]}.tif"
        with RasterOnGrid(ref.path, sub, "nearest", bands=ref.index) as r:
            dtype, nodata = np.dtype(r.src_dtype), r.src_nodata
            nodata = nodata if nodata is not None else (np.nan if dtype.kind == "f" else 0)
            with CogWriter(target, sub, dtype, nodata, tags={"band": band, "cropped_from": scene.scene_id}) as w:
                for win in iter_windows(sub, 1024, 1024):
                    w.write(r.read(win), win)
        meta_bands[band] = {"scale": ref.scale, "offset": ref.offset, "from": scene.scale_source}
    with atomic_write(folder / SCENE_JSON) as fh:
        json.dump(
            {
                "id": scene.scene_id,
                "items": [scene.scene_id],
                "date": scene.date,
                "product": scene.product,
                "processing_baseline": scene.processing_baseline,
                "cloud_cover": scene.metadata.get("eo:cloud_cover"),
                "crs": crs,
                "bbox": list(bbox),
                "source": scene.source,
                "bands": meta_bands,
            },
            fh,
            indent=2,
        )
    return folder
