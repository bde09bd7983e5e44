"""Does a model fit a scene? The checks ``predict_scene`` (and ``assess``) run before and after the tiles.

* **Resolution** (:func:`check_resolution`, before): the scene's pixel size (true metres, also for a
  geographic CRS: ``common.geo.pixel_size_m``) against the ground sampling distance the model learnt at
  (``SegmenterMeta.gsd_m``; 10 m for every L4S or synthetic model). A ratio above :data:`MAX_GSD_RATIO` either
  way is refused with a one-line error naming both numbers (a landslide of 20 pixels at 10 m is one pixel at
  100 m: the network has never seen its own features at that scale); ``allow=True``
  (``--allow-resolution-mismatch``) runs anyway with a warning. ``--min-area-m2`` below one pixel's area
  is a warning (every polygon of one pixel or more is kept).
* **Training data** (:func:`check_training_data`, before): a model whose metadata says it learnt from
  synthetic data only (``training_data.kind == "synthetic"``) warns when applied to a real scene.
* **Domain** (:class:`DomainCheck`, during): per band, a strided sample of the scene's valid pixels (model
  units) against the training statistics stored with the model (``SegmenterMeta.band_stats``). The score
  of a band is ``|median(scene) - mean(train)| / std(train)``; bands scoring above :data:`DOMAIN_SCORE_MAX`
  are named in a warning. Models stored without statistics get no domain check (scores ``{}``).
* **Plausibility** (:func:`check_flagged_share`, after): landslides cover a few percent of even the
  worst-hit scene; more than :data:`MAX_FLAGGED_SHARE` of the valid pixels flagged is a warning that the map
  is more likely a domain problem than a disaster.

Every score and the warnings are recorded in ``summary.json`` (``model_fit``) and logged to MLflow
(:func:`fit_metrics`). ``map_event --imagery-model`` runs the same checks on the event grid and the channels its
segmenter is fed (``imagery.inference.event``): its blocks may run in Dask workers, so each block returns its
sample (:func:`domain_sample`, pure: the pixels kept depend on their place in the grid, not on the order blocks
run in) and the parent scores them (:meth:`DomainCheck.add_sample`); local and Dask engines give the same scores.
:func:`recording` keeps the warnings' texts for the summary and the report.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from common.cli import UserError
from common.geo import Grid, pixel_size_m
from imagery.inference.segmenter import DEFAULT_GSD_M

#: Largest accepted ratio between the scene's pixel size and the model's training GSD (either way).
MAX_GSD_RATIO = 1.5
#: Domain score above which a band is named in the warning: its scene median lies more than this many
#: training standard deviations from the training mean.
DOMAIN_SCORE_MAX = 3.0
#: Share of the valid pixels flagged as landslide above which the result is called implausible.
MAX_FLAGGED_SHARE = 0.10
#: Valid pixels sampled per band for the domain check (strided through the scene).
DOMAIN_SAMPLE = 200_000


def scene_pixel_m(grid: Grid) -> float:
    """A grid's pixel size in true metres at its centre row (geometric mean of the two sides)."""
    dy, dx = pixel_size_m(grid)
    row = grid.height // 2
    return float(np.sqrt(float(dy[row]) * float(dx[row])))


def model_gsd(meta: Any) -> float:
    """The model's training GSD in metres (:data:`DEFAULT_GSD_M` for models stored without one)."""
    value = getattr(meta, "gsd_m", None)
    return float(value) if value else DEFAULT_GSD_M


def check_resolution(
    scene_px_m: float, meta: Any, *, allow: bool, source: str, model: str, min_area_m2: float = 0.0
) -> dict[str, Any]:
    """Refuse (or with ``allow`` warn about) a scene whose pixel size is far from the model's GSD; warn when
    ``min_area_m2`` is below one pixel's area. Returns the numbers for the summary."""
    gsd = model_gsd(meta)
    ratio = max(scene_px_m / gsd, gsd / scene_px_m)
    out: dict[str, Any] = {"scene_pixel_m": scene_px_m, "model_gsd_m": gsd, "gsd_ratio": ratio}
    if ratio > MAX_GSD_RATIO:
        text = (
            f"scene {source} has {scene_px_m:g} m pixels; the model {model} learnt at {gsd:g} m "
            f"({ratio:.1f}x, more than {MAX_GSD_RATIO}x)"
        )
        if not allow:
            raise UserError(
                f"{text}: refused, its map would be wrong at this scale (resample the scene to {gsd:g} m, use a "
                "model trained at its resolution, or pass --allow-resolution-mismatch)"
            )
        warnings.warn(f"{text}; running anyway (--allow-resolution-mismatch)", UserWarning, stacklevel=2)
    pixel_area = scene_px_m**2
    if 0 < min_area_m2 < pixel_area:
        warnings.warn(
            f"--min-area-m2 {min_area_m2:g} is smaller than one pixel of this scene ({pixel_area:g} m2): "
            "every polygon of one pixel or more is kept",
            UserWarning,
            stacklevel=2,
        )
    return out


def check_training_data(meta: Any, *, scene_synthetic: bool, model: str) -> str | None:
    """Warn when a model that learnt from synthetic data only is applied to a real scene; returns the kind."""
    info = getattr(meta, "training_data", None) or {}
    kind = info.get("kind")
    if kind == "synthetic" and not scene_synthetic:
        warnings.warn(
            f"the model {model} learnt from synthetic data only ({info.get('name', 'synthetic')}); its map of this "
            "real scene is a demonstration, not a detection (train on real labelled patches, e.g. --data L4S)",
            UserWarning,
            stacklevel=2,
        )
    return kind


def domain_step(n_pixels: int) -> int:
    """The stride of the domain sample over a scene of ``n_pixels``: about :data:`DOMAIN_SAMPLE` pixels are kept."""
    return max(1, int(n_pixels) // DOMAIN_SAMPLE)


def domain_sample(
    raw: np.ndarray, valid: np.ndarray, *, step: int, row_off: int = 0, col_off: int = 0, grid_width: int | None = None
) -> np.ndarray:
    """The domain sample of one block: ``(C, k)`` values of ``raw`` ``(C, h, w)`` at its ``valid`` ``(h, w)`` pixels
    whose place in the grid (row-major index ``row * grid_width + col``, the block starting at ``row_off, col_off``)
    is a multiple of ``step``: every ``step``-th pixel of the scene, whatever the blocks and their order."""
    h, w = valid.shape
    width = int(grid_width or w)
    rows = (np.arange(h, dtype=np.int64) + int(row_off))[:, None] * width
    index = rows + (np.arange(w, dtype=np.int64) + int(col_off))[None, :]
    keep = (index % int(step) == 0) & np.asarray(valid, dtype=bool)
    return np.asarray(raw)[:, keep].astype(np.float32, copy=False)


class DomainCheck:
    """Collects a strided sample of each band's valid pixels and scores them against the training statistics.

    ``bands``: the model's raw bands in input order; ``stats``: ``SegmenterMeta.band_stats``;
    ``n_pixels``: the scene's pixel count (sets the stride so that about :data:`DOMAIN_SAMPLE` pixels are kept).
    Fed either row block by row block (:meth:`add`, ``predict_scene``) or with samples taken elsewhere by
    :func:`domain_sample` (:meth:`add_sample`, ``map_event``'s blocks).
    """

    def __init__(self, bands: tuple[str, ...], stats: dict[str, dict[str, float]] | None, n_pixels: int) -> None:
        self.bands = tuple(bands)
        self.stats = dict(stats or {})
        self.step = domain_step(n_pixels)
        self._seen = 0
        self._samples: list[list[np.ndarray]] = [[] for _ in self.bands]

    def add(self, raw: np.ndarray, valid: np.ndarray) -> None:
        """Sample ``raw`` ``(C, rows, W)`` (model units) where ``valid`` ``(rows, W)``; once per final row block
        of the full scene width, top to bottom."""
        if not self.stats:
            return
        width = valid.shape[1]
        self.add_sample(domain_sample(raw, valid, step=self.step, row_off=self._seen // width, grid_width=width))
        self._seen += valid.size

    def add_sample(self, values: np.ndarray) -> None:
        """Add a block's sample ``(C, k)`` (:func:`domain_sample`; blocks in any order)."""
        if not self.stats or values.size == 0:
            return
        if values.shape[0] != len(self.bands):
            raise ValueError(f"a domain sample of {values.shape[0]} channels for {len(self.bands)} bands")
        for i in range(len(self.bands)):
            self._samples[i].append(values[i])

    def scores(self) -> dict[str, float]:
        """``{band: |median(scene) - mean(train)| / std(train)}`` for the bands with statistics and samples."""
        out = {}
        for i, band in enumerate(self.bands):
            st = self.stats.get(band)
            if not st or not self._samples[i]:
                continue
            values = np.concatenate(self._samples[i])
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            std = max(float(st["std"]), 1e-6)
            out[band] = round(abs(float(np.median(values)) - float(st["mean"])) / std, 3)
        return out

    def warn(self, scores: dict[str, float], model: str) -> list[str]:
        """Warn naming the bands scoring above :data:`DOMAIN_SCORE_MAX`; returns them."""
        far = [b for b, v in scores.items() if v > DOMAIN_SCORE_MAX]
        if far:
            detail = ", ".join(f"{b} {scores[b]:.1f}" for b in far)
            warnings.warn(
                f"bands far outside the training data of the model {model} (|scene median - train mean| / train std "
                f"above {DOMAIN_SCORE_MAX:g}): {detail}; the map may be unreliable",
                UserWarning,
                stacklevel=2,
            )
        return far

    def record(self, fit: dict[str, Any], model: str) -> None:
        """Score, warn and put ``domain_scores``, ``domain_bands_far`` and ``domain_score_max`` into ``fit``."""
        fit["domain_scores"] = self.scores()
        fit["domain_bands_far"] = self.warn(fit["domain_scores"], model)
        fit["domain_score_max"] = DOMAIN_SCORE_MAX


def check_flagged_share(landslide: int, valid: int) -> float:
    """Warn when more than :data:`MAX_FLAGGED_SHARE` of the valid pixels are flagged; returns the share."""
    share = landslide / valid if valid else 0.0
    if share > MAX_FLAGGED_SHARE:
        warnings.warn(
            f"{share:.1%} of the valid pixels are flagged as landslide (more than {MAX_FLAGGED_SHARE:.0%}; landslides "
            "cover a few percent of even the worst-hit scene): check the model's fit to this scene",
            UserWarning,
            stacklevel=2,
        )
    return share


_METRIC_UNSAFE = re.compile(r"[^0-9A-Za-z_./ -]")


def fit_metrics(fit: dict[str, Any]) -> dict[str, float]:
    """The MLflow metrics of a ``model_fit`` record: ``domain_score_<band>`` (characters MLflow refuses, such as
    the ``@`` of ``B04@post``, become ``_``), ``flagged_share``, ``gsd_ratio`` and ``scene_pixel_m``."""
    out = {f"domain_score_{_METRIC_UNSAFE.sub('_', b)}": float(v) for b, v in fit.get("domain_scores", {}).items()}
    out.update({k: float(fit[k]) for k in ("flagged_share", "gsd_ratio", "scene_pixel_m") if fit.get(k) is not None})
    return out


@contextlib.contextmanager
def recording(into: list[str]) -> Iterator[None]:
    """Append the text of every ``UserWarning`` raised inside to ``into`` (for a summary or a report) and raise
    each again on the way out, so it is still shown (and seen by ``pytest.warns``); also when an error ends it."""
    kept: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            try:
                yield
            finally:
                kept = list(caught)
    finally:
        for w in kept:
            text = str(w.message)
            if issubclass(w.category, UserWarning) and text not in into:
                into.append(text)
            # shown where it was raised (the check's caller), filtered as this package's warnings are
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, module=__name__)


__all__ = [
    "DOMAIN_SCORE_MAX",
    "MAX_FLAGGED_SHARE",
    "MAX_GSD_RATIO",
    "DomainCheck",
    "check_flagged_share",
    "check_resolution",
    "check_training_data",
    "domain_sample",
    "domain_step",
    "fit_metrics",
    "model_gsd",
    "recording",
    "scene_pixel_m",
]
