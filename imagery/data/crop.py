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

from common.atomic import atomic_write
from imagery.data.sentinel2 import SCENE_JSON, SceneSource
from imagery.data.stac import write_band_boxes


def crop_scene(scene: SceneSource, bbox: Sequence[float], out: str | os.PathLike[str]) -> Path:
    """Write the ``bbox`` (W, S, E, N degrees) of ``scene`` into the folder ``out``; returns ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    bands = [*scene.bands, *(["SCL"] if scene.has_scl else [])]
    sources = {b: (scene.files[b].path, scene.files[b].index) for b in bands}
    grids = write_band_boxes(sources, bbox, folder, {"cropped_from": scene.scene_id})
    meta_bands = {
        b: {"scale": scene.files[b].scale, "offset": scene.files[b].offset, "from": scene.scale_source} for b in bands
    }
    with atomic_write(folder / SCENE_JSON) as fh:
        json.dump(
            {
                "id": scene.scene_id,
                "items": [scene.scene_id],
                "date": scene.date,
                "product": scene.product,
                "processing_baseline": scene.processing_baseline,
                "cloud_cover": scene.metadata.get("eo:cloud_cover"),
                "crs": grids[bands[0]].crs,
                "bbox": list(bbox),
                "source": scene.source,
                "bands": meta_bands,
                "synthetic": bool(scene.metadata.get("synthetic")),
            },
            fh,
            indent=2,
        )
    return folder
