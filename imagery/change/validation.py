"""Score an event map against a reference landslide mask raster (a local stand-in for ``pipelines.validate``).

* Pixel level: ROC-AUC of ``probability.tif`` against the reference (0/1, read onto the output grid with
  nearest resampling), over pixels observed in both (finite probability, finite reference).
* Object level: reference objects are the 8-connected landslide regions of the mask; one is *found* when at
  least one of its pixels lies in a detected polygon (the detection mask); recall = found / objects. The
  precision side needs the polygon matching of the validation issue and is not computed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from common.cli import UserError
from common.geo import Grid, RasterOnGrid, rasterize


def score_against_reference(out: Path, grid: Grid, reference: str, features: list[Any]) -> dict[str, float]:
    """``{roc_auc, object_recall, n_reference_objects, n_found}`` of the map in ``out`` against ``reference``."""
    with RasterOnGrid(reference, grid, "nearest", bands=1) as r:
        ref = r.read()
    with RasterOnGrid(out / "probability.tif", grid, "nearest", bands=1) as r:
        prob = r.read()
    ok = np.isfinite(prob) & np.isfinite(ref)
    truth = ref[ok] > 0
    if truth.all() or not truth.any():
        raise UserError(
            f"--reference {reference}: needs both landslide and background pixels where the map is observed"
        )
    auc = float(roc_auc_score(truth, prob[ok]))
    labels, n = ndimage.label(np.nan_to_num(ref) > 0, structure=np.ones((3, 3), bool))
    hit = rasterize([f.geometry for f in features], grid, crs=grid.crs) > 0 if features else np.zeros(grid.shape, bool)
    found = int(np.unique(labels[hit & (labels > 0)]).size)
    return {
        "roc_auc": round(auc, 4),
        "object_recall": round(found / n, 4) if n else float("nan"),
        "n_reference_objects": int(n),
        "n_found": found,
    }
