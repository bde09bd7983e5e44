"""The segmenter in ``map_event`` (``--imagery-model``): where it runs (the gate) and what it is given, torch-free.

``imagery.change`` never imports a network: the caller (``pipelines.map_event``) passes a :class:`BlockSegmenter`
(``imagery.inference.event.EventSegmenter``), which says which composites and bands it needs, how it cuts a block into
tiles, and returns its landslide probability on the tiles it is asked to run. Per block
(:func:`imagery.change.event.process_block`): the change score and the susceptibility decide which tiles pass the
gate; only then are the model's bands composited (post, and pre for a ``pre-post`` / ``pre-post-diff`` model) and
the network run on those tiles. Pixels of tiles it did not run get no ``p_segmenter`` (NaN), never 0.

**The segmenter gate** (:class:`GateParams`, :func:`tile_passes`): a tile runs when at least ``min_pixels`` of its
pixels have a change score of at least ``score_floor`` or a susceptibility of at least ``susceptibility_floor``.
Defaults and why:

* ``score_floor = 0.25``: the detector's score (:func:`imagery.change.detector.change_score`) of a vegetation loss
  of half the detector's ``min_ndvi_loss`` (dNDVI -0.05) on a vegetated slope is 0.27, so the network also looks
  where the change is weaker than the hard rule; unchanged ground scores at most 0.12 (dNDVI 0) and the seasonal
  noise of a median composite (|dNDVI| < 0.02) at most 0.17: tiles of unchanged land are skipped.
* ``susceptibility_floor = 0.5``: the inventory calls ground above it susceptible (``inventory.HIGH_SUSCEPTIBILITY``);
  the network also checks such ground when the change evidence there is weak.
* ``min_pixels = 5``: the smallest polygon the inventory keeps by default (500 m2) is 5 pixels at 10 m; a tile
  with fewer passing pixels cannot hold a landslide the inventory would keep, and single noisy pixels (cloud
  edges, misregistration) do not open a tile.

``enabled=False`` (``--no-gate``) runs every tile with at least one observed pixel (the comparison the benchmark
makes). Tiles with no observed pixel never run: there is nothing to predict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from common.cli import UserError


@dataclass(frozen=True)
class GateParams:
    """Where the segmenter runs (module docstring: meaning and the reason for each default)."""

    score_floor: float = 0.25
    susceptibility_floor: float = 0.5
    min_pixels: int = 5
    enabled: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_floor <= 1.0 or not 0.0 <= self.susceptibility_floor <= 1.0:
            raise ValueError("the gate's floors must be in 0..1")
        if self.min_pixels < 1:
            raise ValueError(f"the gate's min_pixels must be >= 1, got {self.min_pixels}")


@dataclass(frozen=True)
class SegmenterSettings:
    """The ``--imagery-model`` settings of ``map_event`` (typed; ``None`` model: change evidence alone).

    ``weight``: how much the segmenter's probability moves the fused one (``fusion.change_fusion``); ``batch_size``
    tiles per forward pass; ``device``/``runtime``: as for ``predict_scene`` (``runtime`` an engine spec:
    ``auto`` is the measured fastest path, :mod:`imagery.inference.engine`); ``tta`` ``None``: as stored."""

    model: str | None = None
    weight: float = 0.5
    batch_size: int = 8
    device: str = "auto"
    runtime: str = "auto"
    tta: str | None = None
    allow_resolution_mismatch: bool = False


Tile = tuple[int, int, int, int]  # (row, col, height, width) inside a block


class BlockSegmenter(Protocol):
    """What :func:`imagery.change.event.process_block` needs of a segmenter (picklable: it travels to Dask)."""

    #: canonical band names of the composites it needs (``B2``...), and whether it needs an NDVI composite
    bands: tuple[str, ...]
    with_ndvi: bool
    #: whether it needs the pre-event composite too (a ``pre-post`` / ``pre-post-diff`` model)
    needs_pre: bool
    #: its decision threshold on the probability (a pixel at or above it is a scar to the segmenter)
    threshold: float

    def describe(self) -> dict:
        """What the summary and the ``--resume`` fingerprint say about it (model, weights digest, settings)."""
        ...

    def tiles(self, height: int, width: int) -> list[Tile]:
        """The tiles it cuts a block of ``height`` x ``width`` px into (they may overlap)."""
        ...

    def __call__(
        self,
        post: np.ndarray,
        pre: np.ndarray | None,
        slope_deg: np.ndarray,
        dem_m: np.ndarray,
        tiles: Sequence[Tile],
        *,
        origin: tuple[int, int] = (0, 0),
        grid_shape: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Landslide probability ``(h, w)`` float32 of the block from the composites of :attr:`bands` (``(B, h, w)``
        reflectance, NaN unobserved), run on ``tiles`` only; NaN outside them and where the post composite is
        unobserved. And the block's sample of what the network was fed, ``(C, k)`` float32, for the domain check
        of the parent (``imagery.inference.fitness``): ``origin`` is the block's first (row, col) in the grid of
        ``grid_shape``, so the sample is the same however the grid is cut into blocks."""
        ...


def tile_passes(score: np.ndarray, susceptibility: np.ndarray | None, gate: GateParams) -> bool:
    """Whether a tile runs (module docstring); ``score`` and ``susceptibility`` are the tile's ``(h, w)`` pixels
    (NaN: unobserved / outside the susceptibility map)."""
    observed = np.isfinite(score)
    if not observed.any():
        return False
    if not gate.enabled:
        return True
    with np.errstate(invalid="ignore"):
        passing = score >= gate.score_floor
        if susceptibility is not None:
            passing |= observed & (susceptibility >= gate.susceptibility_floor)
    return int(passing.sum()) >= gate.min_pixels


def check_bands(windows: Any, bands: Sequence[str], *, pre: bool, where: str) -> None:
    """One-line :class:`UserError` when an item of the post-event window (and the pre-event one with ``pre``) lacks a
    band the segmenter needs (``windows``: :class:`imagery.change.acquisition.EventWindows`)."""
    observations = [*(windows.pre if pre else ()), *windows.post]
    for obs in observations:
        missing = [b for b in bands if b not in obs.files]
        if missing:
            raise UserError(
                f"{where}: item {obs.item_id!r} lacks band(s) {', '.join(missing)} that --imagery-model needs "
                f"(it composites {', '.join(bands)}); use items with those assets or a model trained on fewer bands"
            )
