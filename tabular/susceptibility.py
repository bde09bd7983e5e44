"""Susceptibility maps: per-cell probabilities written back onto the table's raster grid.

:class:`SusceptibilityRaster` receives scored rows batch by batch (cell centres ``x``, ``y`` in the
grid's CRS and P(landslide)), places each on its grid cell in a disk-backed float32 array (a memory
map in a temporary folder beside the output, so the rows may come in any order and memory stays
bounded), and on a clean exit writes

* ``<raster_out>`` (e.g. ``susceptibility.tif``): a Cloud-Optimized GeoTIFF, float32, the table's grid
  (CRS, transform, size), NaN nodata where the table has no row for the cell or any model input of
  the row was nodata;
* ``susceptibility_classes.tif`` beside it: uint8 classes 1 very low, 2 low, 3 moderate, 4 high,
  5 very high (0 = nodata: cells without a row and cells whose model input was nodata are never
  classed and never counted in the shares). Default zoning (:data:`AREA_QUANTILES`): the most
  susceptible 2.5 % of the mapped area is "very high", the next 7.5 % "high", then 15 % "moderate",
  25 % "low" and the remaining half "very low" (an area-quantile zoning, common in susceptibility
  mapping when probabilities of a rare class are small). **Ties stay together**: cells with the same
  probability always get the same class, so a break can only fall between two distinct probabilities;
  each of the four breaks is put where the share of mapped cells below it is closest to its target
  (50, 75, 90, 97.5 %; of two equally close positions, the one keeping the tied cells in the lower
  class). A large flat area (the sea of a whole-tile map) therefore stays in one class, and a class may
  be empty when one probability covers more than its share (the legend then says "empty"). Fixed
  probability breaks can be given
  instead (``breaks``: four increasing values); class ``c`` holds ``breaks[c-2] <= p < breaks[c-1]``;
* ``susceptibility_map.png``: the classes with a legend (down-sampled to at most 2,000 pixels a side).

Everything is written under temporary names and renamed at the end (``common.geo.CogWriter``,
``common.atomic``); on an error nothing is left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import mlflow
import numpy as np

from common.atomic import atomic_path, write_error
from common.cli import UserError
from common.geo import CogWriter, Grid, iter_windows

AREA_QUANTILES = (0.50, 0.75, 0.90, 0.975)
CLASS_NAMES = ("very low", "low", "moderate", "high", "very high")
CLASS_COLOURS = ("#1a9641", "#a6d96a", "#ffffbf", "#fdae61", "#d7191c")
CLASSES_NAME = "susceptibility_classes.tif"
PNG_NAME = "susceptibility_map.png"
PNG_MAX_PIXELS = 2000


def class_breaks(p: np.ndarray, breaks: list[float] | None = None) -> np.ndarray:
    """Four non-decreasing probability breaks: ``breaks`` checked, or the tie-aware area zoning of ``p``.

    The zoning (module docstring): over the distinct finite values ``u`` of ``p`` with cumulative
    shares ``s`` (share of the finite cells ``<= u[j]``), break ``k`` is ``u[j+1]`` for the ``j``
    whose share is closest to ``AREA_QUANTILES[k]`` (share 0, all cells above, allowed; the break is
    then ``u[0]``), so that every cell of one value falls on one side of every break. When the nearest
    position is "every cell below", the break is ``+inf``. Equal breaks mean an empty class. NaN ignored.
    """
    if breaks is not None:
        b = np.asarray(breaks, dtype=np.float64)
        if b.shape != (4,) or not (np.diff(b) > 0).all() or b[0] <= 0 or b[-1] >= 1:
            raise UserError(f"--class-breaks expects 4 increasing probabilities in (0, 1), got {breaks}")
        return b
    valid = p[np.isfinite(p)]
    if valid.size == 0:
        raise UserError("no cell of the grid received a probability (do the table's x/y lie on the grid?)")
    values, counts = np.unique(valid, return_counts=True)
    # shares[j]: share of cells below the break placed just above values[j-1] (j = 0: no cell below)
    shares = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64) / valid.size])
    upper = np.concatenate([values.astype(np.float64), [np.inf]])  # the break for position j is upper[j]
    out = []
    for q in AREA_QUANTILES:
        d = np.abs(shares - q)
        j = len(d) - 1 - int(np.argmin(d[::-1]))  # of two equally close positions the higher: ties stay low
        out.append(upper[j])
    return np.asarray(out, dtype=np.float64)


def classify(p: np.ndarray, breaks: np.ndarray) -> np.ndarray:
    """uint8 classes 1..5 (:data:`CLASS_NAMES`): class ``c`` holds ``breaks[c-2] <= p < breaks[c-1]``; 0 where
    ``p`` is NaN (equal breaks leave the class between them empty; equal probabilities share one class)."""
    cls = (np.searchsorted(breaks, p, side="right") + 1).astype(np.uint8)
    cls[~np.isfinite(p)] = 0
    return cls


def class_shares(p: np.ndarray, breaks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class 1..5: share of the finite cells of ``p``, and min and max probability (NaN when empty)."""
    valid = p[np.isfinite(p)]
    cls = classify(valid, breaks)
    n = max(valid.size, 1)
    shares = np.array([(cls == c).sum() / n for c in range(1, 6)])
    lo = np.array([valid[cls == c].min() if (cls == c).any() else np.nan for c in range(1, 6)])
    hi = np.array([valid[cls == c].max() if (cls == c).any() else np.nan for c in range(1, 6)])
    return shares, lo, hi


def legend_labels(shares: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[str]:
    """Legend text per class: the name, the range of probabilities it holds and its share of the mapped area."""
    labels = []
    for name, s, a, b in zip(CLASS_NAMES, shares, lo, hi, strict=True):
        if not np.isfinite(a):
            labels.append(f"{name} (empty)")
        elif a == b:
            labels.append(f"{name} (p = {a:.3g}, {s:.1%} of area)")
        else:
            labels.append(f"{name} ({a:.3g}-{b:.3g}, {s:.1%} of area)")
    return labels


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
        self.shares: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.cells = 0
        self.off_grid = 0
        self.written: list[Path] = []
        self._tmp: Path | None = None
        self._arr: np.ndarray | None = None

    def check_writable(self) -> None:
        """Refuse, naming ``--raster-out``, a folder the maps cannot be written to (before any scoring)."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise write_error(self.path, OSError(errno.EACCES, "folder is read-only or not writable"))

    def __enter__(self) -> SusceptibilityRaster:
        self.check_writable()
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".work", dir=self.path.parent))
        except OSError as exc:
            raise write_error(self.path, exc) from None
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
        self.shares = class_shares(np.asarray(arr), self.breaks)
        rows = max(1, (8 << 20) // (4 * self.grid.width))
        tags = {"units": "probability", "long_name": "P(landslide)"}
        class_tags = {
            "classes": ", ".join(f"{i + 1}={n}" for i, n in enumerate(CLASS_NAMES)),
            "breaks": ",".join(f"{b:.6g}" for b in self.breaks),
            "class_shares": ",".join(f"{v:.4f}" for v in self.shares[0]),
        }
        # both rasters are finished before either is renamed into place
        with atomic_path(self.classes_path) as tmp_cls, atomic_path(self.png_path) as tmp_png:
            with CogWriter(tmp_cls, self.grid, "uint8", 0, tags=class_tags) as wc:
                with CogWriter(self.path, self.grid, "float32", np.nan, tags=tags) as wp:
                    for win in iter_windows(self.grid, rows):
                        block = np.asarray(arr[win.row_off : win.row_off + win.height, :])
                        wp.write(block, win)
                        wc.write(classify(block, self.breaks), win)
            self._png(tmp_png)
        self.written = [self.path, self.classes_path, self.png_path]

    def _png(self, path: Path) -> None:
        import matplotlib  # noqa: PLC0415 - plotting loads only when a map is drawn

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 - see above
        from matplotlib.colors import ListedColormap  # noqa: PLC0415 - see above
        from matplotlib.patches import Patch  # noqa: PLC0415 - see above

        assert self._arr is not None and self.breaks is not None and self.shares is not None
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
        labels = legend_labels(*self.shares)
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
        for p in (self.path, self.classes_path, self.png_path):
            mlflow.log_artifact(str(p), artifact_path="susceptibility")
        if self.breaks is not None:
            mlflow.log_params({f"class_break_{i + 1}": f"{b:.6g}" for i, b in enumerate(self.breaks)})
        if self.shares is not None:
            mlflow.log_metrics({f"class_share_{i + 1}": float(v) for i, v in enumerate(self.shares[0])})
        mlflow.log_metrics({"raster_cells": float(self.cells), "rows_off_grid": float(self.off_grid)})

    def summary(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "off_grid": self.off_grid,
            "breaks": None if self.breaks is None else [float(b) if np.isfinite(b) else None for b in self.breaks],
            "class_shares": None if self.shares is None else [round(float(v), 6) for v in self.shares[0]],
            "files": [str(p) for p in self.written],
        }
