"""Susceptibility maps: per-cell probabilities written back onto the table's raster grid.

:class:`SusceptibilityRaster` receives scored rows batch by batch (cell centres ``x``, ``y`` in the
grid's CRS and P(landslide)), places each on its grid cell in a disk-backed float32 array (a memory
map in a temporary folder beside the output, so the rows may come in any order and memory stays
bounded), and on a clean exit writes

* ``<raster_out>`` (e.g. ``susceptibility.tif``): a Cloud-Optimized GeoTIFF, float32, the table's grid
  (CRS, transform, size), NaN nodata where the table has no row for the cell or any model input of
  the row was nodata;
* ``susceptibility_classes.tif`` beside it: uint8 classes 1 very low, 2 low, 3 moderate, 4 high,
  5 very high (0 = nodata). Default breaks (:data:`AREA_QUANTILES`): the 50th, 75th, 90th and 97.5th
  percentiles of the mapped probabilities, i.e. the most susceptible 2.5 % of the mapped area is
  "very high", the next 7.5 % "high", then 15 % "moderate", 25 % "low" and the remaining half "very
  low" (an area-quantile zoning, common in susceptibility mapping when probabilities of a rare class
  are small). Fixed probability breaks can be given instead (``breaks``: four increasing values);
  class ``c`` holds ``breaks[c-2] <= p < breaks[c-1]``;
* ``susceptibility_map.png``: the classes with a legend (down-sampled to at most 2,000 pixels a side);
* QGIS styles: the class raster carries a colour table and its class names (``CLASSES`` tag); both rasters
  get a ``.qml`` sidecar (the classes, and the probability ramp at the class breaks) that QGIS applies on
  load (:mod:`common.geo.style`).

Everything is written under temporary names and renamed at the end (``common.geo.CogWriter``,
``common.atomic``); on an error nothing is left behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import mlflow
import numpy as np

from common.atomic import atomic_path
from common.cli import UserError
from common.geo import CLASSES_TAG, CogWriter, Grid, classes_qml, iter_windows, write_qml
from common.geo.style import breaks_qml, qml_path

AREA_QUANTILES = (0.50, 0.75, 0.90, 0.975)
CLASS_NAMES = ("very low", "low", "moderate", "high", "very high")
CLASS_COLOURS = ("#1a9641", "#a6d96a", "#ffffbf", "#fdae61", "#d7191c")
CLASSES_NAME = "susceptibility_classes.tif"
PNG_NAME = "susceptibility_map.png"
PNG_MAX_PIXELS = 2000


def class_breaks(p: np.ndarray, breaks: list[float] | None = None) -> np.ndarray:
    """Four increasing probability breaks: ``breaks`` checked, or the :data:`AREA_QUANTILES` of ``p`` (NaN ignored)."""
    if breaks is not None:
        b = np.asarray(breaks, dtype=np.float64)
        if b.shape != (4,) or not (np.diff(b) > 0).all() or b[0] <= 0 or b[-1] >= 1:
            raise UserError(f"--class-breaks expects 4 increasing probabilities in (0, 1), got {breaks}")
        return b
    valid = p[np.isfinite(p)]
    if valid.size == 0:
        raise UserError("no cell of the grid received a probability (do the table's x/y lie on the grid?)")
    return np.quantile(valid, AREA_QUANTILES).astype(np.float64)


def _class_labels(b: np.ndarray | list[float]) -> list[str]:
    """The class names with their probability ranges, e.g. ``moderate (0.01-0.03)``."""
    return [
        f"{CLASS_NAMES[0]} (p < {b[0]:.3g})",
        f"{CLASS_NAMES[1]} ({b[0]:.3g}-{b[1]:.3g})",
        f"{CLASS_NAMES[2]} ({b[1]:.3g}-{b[2]:.3g})",
        f"{CLASS_NAMES[3]} ({b[2]:.3g}-{b[3]:.3g})",
        f"{CLASS_NAMES[4]} (p >= {b[3]:.3g})",
    ]


def classify(p: np.ndarray, breaks: np.ndarray) -> np.ndarray:
    """uint8 classes 1..5 (:data:`CLASS_NAMES`) by ``breaks``; 0 where ``p`` is NaN."""
    cls = (np.searchsorted(breaks, p, side="right") + 1).astype(np.uint8)
    cls[~np.isfinite(p)] = 0
    return cls


class SusceptibilityRaster:
    """Collect scored cells onto ``grid`` and write the GeoTIFFs and PNG on exit (module docstring)."""

    def __init__(self, grid: Grid, path: Path, *, breaks: list[float] | None = None) -> None:
        self.grid = grid
        self.path = Path(path)
        if self.path.suffix.lower() not in (".tif", ".tiff"):
            raise UserError(f"--raster-out {self.path}: expected a .tif file name")
        self.classes_path = self.path.with_name(CLASSES_NAME)
        self.png_path = self.path.with_name(PNG_NAME)
        self.user_breaks = breaks
        self.breaks: np.ndarray | None = None
        self.cells = 0
        self.off_grid = 0
        self._tmp: Path | None = None
        self._arr: np.ndarray | None = None

    def __enter__(self) -> SusceptibilityRaster:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".work", dir=self.path.parent))
        self._arr = np.lib.format.open_memmap(self._tmp / "p.npy", mode="w+", dtype=np.float32, shape=self.grid.shape)
        self._arr[:] = np.nan
        return self

    def add(self, x: np.ndarray, y: np.ndarray, p: np.ndarray) -> None:
        """Place ``p`` at the cells whose centres are ``(x, y)`` (grid CRS); rows off the grid are counted."""
        assert self._arr is not None
        inv = ~self.grid.transform
        col, row = inv * (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        c = np.floor(col).astype(np.int64)
        r = np.floor(row).astype(np.int64)
        ok = (r >= 0) & (r < self.grid.height) & (c >= 0) & (c < self.grid.width)
        self.off_grid += int((~ok).sum())
        self._arr[r[ok], c[ok]] = p[ok]
        self.cells += int(ok.sum())

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self._write()
        finally:
            self._arr = None
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def _write(self) -> None:
        arr = self._arr
        assert arr is not None
        if self.cells == 0:
            raise UserError(
                f"none of the table's rows lies on the {self.grid.height}x{self.grid.width} grid "
                f"(CRS {self.grid.crs}); are x/y in the grid's CRS?"
            )
        self.breaks = class_breaks(np.asarray(arr), self.user_breaks)
        rows = max(1, (8 << 20) // (4 * self.grid.width))
        tags = {"units": "probability", "long_name": "P(landslide)"}
        names = _class_labels(self.breaks)
        class_tags = {
            "classes": ", ".join(f"{i + 1}={n}" for i, n in enumerate(CLASS_NAMES)),
            "breaks": ",".join(f"{b:.6g}" for b in self.breaks),
            "long_name": "landslide susceptibility class",
            "units": "class",
            CLASSES_TAG: json.dumps({str(i + 1): n for i, n in enumerate(CLASS_NAMES)}),
        }
        palette = {i + 1: c for i, c in enumerate(CLASS_COLOURS)}
        # both rasters are finished before either is renamed into place
        with atomic_path(self.classes_path) as tmp_cls, atomic_path(self.png_path) as tmp_png:
            with CogWriter(tmp_cls, self.grid, "uint8", 0, tags=class_tags, colormap=palette) as wc:
                qml = breaks_qml(self.breaks, CLASS_COLOURS, names)
                with CogWriter(self.path, self.grid, "float32", np.nan, tags=tags, qml=qml) as wp:
                    for win in iter_windows(self.grid, rows):
                        block = np.asarray(arr[win.row_off : win.row_off + win.height, :])
                        wp.write(block, win)
                        wc.write(classify(block, self.breaks), win)
            self._png(tmp_png)
        legend = {i + 1: (c, n) for i, (c, n) in enumerate(zip(CLASS_COLOURS, names, strict=True))}
        write_qml(self.classes_path, classes_qml(legend))

    def _png(self, path: Path) -> None:
        import matplotlib  # noqa: PLC0415 - plotting loads only when a map is drawn

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 - see above
        from matplotlib.colors import ListedColormap  # noqa: PLC0415 - see above
        from matplotlib.patches import Patch  # noqa: PLC0415 - see above

        assert self._arr is not None and self.breaks is not None
        step = max(1, int(np.ceil(max(self.grid.shape) / PNG_MAX_PIXELS)))
        small = classify(np.asarray(self._arr[::step, ::step]), self.breaks).astype(np.float32)
        small[small == 0] = np.nan
        left, bottom, right, top = self.grid.bounds
        fig, ax = plt.subplots(figsize=(7, 7 * self.grid.height / max(self.grid.width, 1) + 0.8))
        ax.imshow(
            small,
            cmap=ListedColormap(CLASS_COLOURS),
            vmin=0.5,
            vmax=5.5,
            extent=(left, right, bottom, top),
            interpolation="nearest",
        )
        labels = _class_labels(self.breaks)
        ax.legend(
            handles=[Patch(color=c, label=lab) for c, lab in zip(CLASS_COLOURS, labels, strict=True)],
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            title="landslide susceptibility",
        )
        ax.set_xlabel(f"x ({self.grid.crs})")
        ax.set_ylabel("y")
        ax.ticklabel_format(useOffset=False, style="plain")
        fig.tight_layout()
        fig.savefig(path, dpi=100, format="png")
        plt.close(fig)

    def log(self) -> None:
        """Log the three outputs and the class breaks to the active MLflow run."""
        for p in (self.path, self.classes_path, self.png_path, *self.style_paths):
            mlflow.log_artifact(str(p), artifact_path="susceptibility")
        if self.breaks is not None:
            mlflow.log_params({f"class_break_{i + 1}": f"{b:.6g}" for i, b in enumerate(self.breaks)})
        mlflow.log_metrics({"raster_cells": float(self.cells), "rows_off_grid": float(self.off_grid)})

    @property
    def style_paths(self) -> tuple[Path, Path]:
        """The QGIS ``.qml`` sidecars of the probability and class rasters."""
        return qml_path(self.path), qml_path(self.classes_path)

    def summary(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "off_grid": self.off_grid,
            "breaks": None if self.breaks is None else self.breaks.tolist(),
        }
