"""A trained segmenter on an event's composites (``pipelines.map_event --imagery-model``).

:class:`EventSegmenter` is the :class:`imagery.change.segmenter.BlockSegmenter` that ``imagery.change.event`` runs
on the blocks' tiles that pass the segmenter gate (``imagery.change`` itself stays torch-free). What it feeds the
network, built from per-pixel median composites of the clear observations (``imagery.change.composite.band_composite``):

* **single-date model** (``SegmenterMeta.temporal`` unset, e.g. trained on L4S): the **post-event** composite of the
  bands it was trained on, in L4S model units (``imagery.data.bands.to_model_units``), ``slope`` (degrees) and ``DEM``
  (metres) from ``--dem`` on the same grid; ``B10`` (cirrus, absent from L2A products) gets
  :data:`imagery.inference.scene.B10_FILL` as in ``predict_scene``. The pre-event composite is never read.
* **temporal model** (``train_imagery --temporal post|pre-post|pre-post-diff --sensor s2``): the channels
  ``imagery.data.sen12_temporal.s2_channels`` builds for training (the one home of that rule), from the post and,
  for ``pre-post`` / ``pre-post-diff``, the pre-event composite, then ``slope``; unobserved values are filled per tile
  as in training (``sen12_temporal.fill_missing``). A model with Sentinel-1 channels (``--sensor s1`` / ``s2+s1``) is
  refused: map_event reads Sentinel-2 only. Dataset norm statistics (``norm_data.json``) used at training are stored
  with the model (``SegmenterMeta.channel_norm``) and applied here the same way.

Tiles: the model's patch size (``SegmenterMeta.patch_size``, 128 px) overlapping by a quarter of it, cut inside each
block (``imagery.inference.predict.tile_starts``) and blended with ``blend_weights`` / ``add_tile`` (the one tiling
step of the tiled paths); a block smaller than a tile is padded (NaN, then the model's own cleaning). A tile sees
no pixel beyond its block: keep ``--block`` several tiles wide.

The network is loaded once per process (:func:`load_segmenter` with the engine spec: ``auto`` is the measured fastest
path, :mod:`imagery.inference.engine`) and dropped when the object is pickled, so Dask workers load it themselves
from the same URI (they must reach the tracking store).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from common.cli import UserError
from imagery.change.segmenter import Tile
from imagery.data.bands import canonical_band, model_unit_factor, to_model_units
from imagery.data.sen12_temporal import fill_missing, s2_channels
from imagery.data.sen12landslides import S2_BANDS
from imagery.inference.fitness import domain_sample, domain_step
from imagery.inference.predict import add_tile, blend_weights, tile_starts
from imagery.inference.scene import B10_FILL
from imagery.inference.serving import load_segmenter

_LOADED: dict[tuple[Any, ...], Any] = {}
#: Bands computed from the DEM, not composited.
TERRAIN = ("slope", "DEM")


def _load(uri: str, tracking_uri: str | None, device: str, runtime: str, digest: str | None) -> Any:
    """The segmenter at ``uri``, loaded once per process; ``digest``: the weights it must have (``None``: load
    afresh). A model that changed under the same URI (an alias moved during the run) is a one-line error."""
    key = (uri, tracking_uri, device, runtime)
    seg = _LOADED.get(key)
    if seg is None or digest is None or str(seg.digest) != digest:
        seg = load_segmenter(uri, device=device, tracking_uri=tracking_uri, flag="--imagery-model", runtime=runtime)
        _LOADED.clear()  # one model per process
        _LOADED[key] = seg
    if digest is not None and str(seg.digest) != digest:
        raise UserError(
            f"--imagery-model {uri}: the model changed during the run (weights {str(seg.digest)[:12]}, "
            f"expected {digest[:12]}); run again"
        )
    return seg


class EventSegmenter:
    """The segmenter of ``map_event`` (module docstring); one-line errors for a model map_event cannot feed."""

    def __init__(
        self,
        uri: str,
        *,
        tracking_uri: str | None = None,
        device: str = "auto",
        runtime: str = "auto",
        batch_size: int = 8,
        tta: str | None = None,
    ) -> None:
        self.uri, self.tracking_uri, self.device, self.runtime = uri, tracking_uri, device, runtime
        self.batch_size, self.tta = int(batch_size), tta
        seg = _load(uri, tracking_uri, device, runtime, None)
        self.digest = str(seg.digest)
        meta = seg.meta
        self.temporal: str | None = meta.temporal
        self.channel_norm: dict[str, dict[str, float]] = dict(meta.channel_norm or {})
        self.model_bands: tuple[str, ...] = tuple(meta.bands)
        self.tile = int(getattr(seg, "fixed_size", None) or meta.patch_size or 128)
        self.overlap = self.tile // 4
        self.threshold = float(seg.threshold)
        if self.temporal:
            if (meta.sensor or "s2") != "s2":
                raise UserError(
                    f"--imagery-model {uri}: trained on --sensor {meta.sensor} (Sentinel-1 channels); map_event reads "
                    "Sentinel-2 items only: use a model trained with --sensor s2"
                )
            sources = [n.split("@")[0] for n in self.model_bands if "@" in n]
            self.s2_bands = tuple(b for b in S2_BANDS if b in sources)
            odd = sorted({s for s in sources if s not in S2_BANDS and s != "NDVI"})
            built = [*s2_channels(*self._dummy(), self.temporal, bands=self.s2_bands)[1], "slope"]
            if odd or built != list(self.model_bands):
                raise UserError(
                    f"--imagery-model {uri}: channels {', '.join(self.model_bands)} are not a Sentinel-2 temporal set "
                    f"map_event can build from composites (expected the order of imagery.data.sen12_temporal)"
                )
            self.bands = tuple(canonical_band(b) for b in self.s2_bands)
            self.with_ndvi = "NDVI@diff" in self.model_bands
            self.needs_pre = self.temporal != "post"
        else:
            self.s2_bands = ()
            self.bands = tuple(b for b in self.model_bands if b not in (*TERRAIN, "B10"))
            self.with_ndvi = False
            self.needs_pre = False

    # -- the network, loaded once per process (not an attribute: a pickled copy carries settings only) ----
    @property
    def segmenter(self) -> Any:
        return _load(self.uri, self.tracking_uri, self.device, self.runtime, self.digest)

    def _dummy(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        one = {b: np.zeros((1, 1), np.float32) for b in (*S2_BANDS, "NDVI")}
        return one, one

    # -- what the summary and the --resume fingerprint say ------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "model": self.uri,
            "digest": self.digest,
            "temporal": self.temporal,
            "channel_norm": self.channel_norm,
            "inputs": ["pre", "post"] if self.needs_pre else ["post"],
            "model_bands": list(self.model_bands),
            "composite_bands": list(self.bands),
            "threshold": self.threshold,
            "tile": self.tile,
            "overlap": self.overlap,
            "tta": self.tta,
            "runtime": self.runtime,
        }

    # -- tiles and inputs ---------------------------------------------------------------------------------
    def tiles(self, height: int, width: int) -> list[Tile]:
        rows = tile_starts(max(height, self.tile), self.tile, self.overlap)
        cols = tile_starts(max(width, self.tile), self.tile, self.overlap)
        return [(r, c, min(self.tile, height), min(self.tile, width)) for r in rows for c in cols]

    def inputs(self, post: np.ndarray, pre: np.ndarray | None, slope_deg: np.ndarray, dem_m: np.ndarray) -> np.ndarray:
        """The raw model input of a block ``(C, h, w)`` float32 (module docstring), NaN where unobserved."""
        if self.temporal:
            names = [*self.s2_bands, *(("NDVI",) if self.with_ndvi else ())]
            post_d = dict(zip(names, post, strict=True))
            pre_d = dict(zip(names, pre, strict=True)) if pre is not None else {}
            arrays, _ = s2_channels(pre_d, post_d, self.temporal, self.channel_norm, bands=self.s2_bands)
            return np.stack([*arrays, slope_deg]).astype(np.float32)
        composite = dict(zip(self.bands, post, strict=True))
        layers = []
        for b in self.model_bands:
            if b == "B10":
                layers.append(np.full(slope_deg.shape, B10_FILL / model_unit_factor("B10"), np.float32))
            elif b == "slope":
                layers.append(slope_deg)
            elif b == "DEM":
                layers.append(dem_m)
            else:
                layers.append(composite[b])
        return to_model_units(np.stack(layers).astype(np.float32), self.model_bands)

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
        """Landslide probability ``(h, w)`` on ``tiles`` (blended where they overlap), NaN elsewhere and where the
        post-event composite is unobserved; and the block's domain sample ``(C, k)`` of the model inputs on those
        tiles (:func:`imagery.inference.fitness.domain_sample`; ``origin``: the block's first row and column in the
        grid of ``grid_shape``, so the pixels sampled do not depend on how the grid is cut)."""
        raw = self.inputs(post, pre, slope_deg, dem_m)
        h, w = raw.shape[1:]
        covered = np.zeros((h, w), bool)
        for r, c, th, tw in tiles:
            covered[r : r + th, c : c + tw] = True
        rows, cols = grid_shape or (h, w)
        sample = domain_sample(
            raw,
            covered & np.isfinite(post[0]),
            step=domain_step(rows * cols),
            row_off=origin[0],
            col_off=origin[1],
            grid_width=cols,
        )
        t = self.tile
        weight = blend_weights(t, self.overlap)
        acc = np.zeros((h, w), np.float32)
        norm = np.zeros((h, w), np.float32)
        seg = self.segmenter
        for start in range(0, len(tiles), self.batch_size):
            chunk = tiles[start : start + self.batch_size]
            batch = np.full((len(chunk), raw.shape[0], t, t), np.nan, np.float32)
            for i, (r, c, th, tw) in enumerate(chunk):
                batch[i, :, :th, :tw] = raw[:, r : r + th, c : c + tw]
                if self.temporal:
                    fill_missing(batch[i])  # as sen12_temporal fills a training patch
            prob = seg.predict(batch, batch_size=len(chunk), tta=self.tta)["prob"]
            for (r, c, th, tw), p in zip(chunk, prob, strict=True):
                add_tile(acc, norm, p[:th, :tw], weight[:th, :tw], r, c)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(norm > 0, acc / norm, np.nan).astype(np.float32)
        out[~np.isfinite(post[0])] = np.nan
        return out, sample


__all__ = ["EventSegmenter"]
