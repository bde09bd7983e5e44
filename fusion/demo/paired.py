"""Paired synthetic regions: a tabular row and a Sentinel-2-like patch per region, one ground truth.

Demo material (:mod:`fusion.demo`): used by the quick start, the tests and the benchmarks, never by a library.

Design (fixed before any fusion result was looked at; not tuned to flatter fusion):

* The table comes from :func:`tabular.synthetic.make_region_table` with ``return_latent=True``.
  Its ``landslide`` label is the ground truth of the region: ``Bernoulli(latent_p)`` where
  ``latent_p`` depends on slope stability *and* the 7-day rainfall trigger. So the table sees the
  causes (terrain, soil, rain) but not whether this particular slope failed.
* The patch comes from :func:`imagery.data.synthetic.synth_patch` with ``has_landslide = landslide``:
  a landslide region always gets a scar in its mask. The patch terrain is consistent with the
  table: ``steepness = clip(slope_deg / 20, 0.3, 2.0)`` (20 degrees is the table's typical slope,
  steepness 1.0 is the patch generator's typical relief).
* Imagery is informative but incomplete: with probability ``cloud_prob`` (0.3) a patch is partly
  clouded, cloud fraction ``U(cloud_min, cloud_max)`` = ``U(0.1, 0.7)``, so some scars are hidden
  (the mask still labels them); rainfall leaves no trace in the patch.

The latent columns and the cloud fraction are returned separately (for analysis only; never features).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.errors import UserError
from imagery.data.synthetic import synth_patch
from tabular.synthetic import make_region_table

LATENT_PREFIX = "latent_"


@dataclass(frozen=True)
class PairedConfig:
    """Generator settings: ``size`` patch side in pixels (10 m each), cloud occurrence and extent."""

    n_regions: int = 800
    seed: int = 0
    size: int = 64
    cloud_prob: float = 0.3
    cloud_min: float = 0.1
    cloud_max: float = 0.7
    slope_ref_deg: float = 20.0

    def __post_init__(self) -> None:
        if self.n_regions < 1:
            raise UserError(f"n_regions must be >= 1, got {self.n_regions}")
        if not 0.0 <= self.cloud_prob <= 1.0:
            raise UserError(f"cloud_prob must be in [0, 1], got {self.cloud_prob}")
        if not 0.0 <= self.cloud_min <= self.cloud_max <= 1.0:
            raise UserError(f"need 0 <= cloud_min <= cloud_max <= 1, got {self.cloud_min}, {self.cloud_max}")


@dataclass
class PairedRegions:
    """``table``: region_id + tabular features + ``landslide``; ``images`` ``(N, 14, H, W)`` float32
    (L4S band order); ``masks`` ``(N, H, W)`` uint8; ``latent``: region_id + ``latent_*`` columns +
    ``cloud_fraction`` (analysis only). Row i of every field is region ``table.region_id[i]``."""

    table: pd.DataFrame
    images: np.ndarray
    masks: np.ndarray
    latent: pd.DataFrame

    @property
    def region_ids(self) -> np.ndarray:
        return self.table["region_id"].to_numpy()

    @property
    def labels(self) -> np.ndarray:
        return self.table["landslide"].to_numpy()

    def subset(self, idx: np.ndarray) -> PairedRegions:
        """Rows ``idx`` (positions) of every field."""
        idx = np.asarray(idx)
        return PairedRegions(
            self.table.iloc[idx].reset_index(drop=True),
            self.images[idx],
            self.masks[idx],
            self.latent.iloc[idx].reset_index(drop=True),
        )


def make_paired_regions(config: PairedConfig = PairedConfig()) -> PairedRegions:
    """Generate ``config.n_regions`` paired regions (see the module docstring). Deterministic per config."""
    full = make_region_table(config.n_regions, seed=config.seed, return_latent=True)
    latent_cols = [c for c in full.columns if c.startswith(LATENT_PREFIX)]
    table = full.drop(columns=latent_cols)
    rng = np.random.default_rng([config.seed, 1])
    n, s = len(full), config.size
    images = np.empty((n, 14, s, s), dtype=np.float32)
    masks = np.empty((n, s, s), dtype=np.uint8)
    clouded = rng.random(n) < config.cloud_prob
    cloud = np.where(clouded, rng.uniform(config.cloud_min, config.cloud_max, n), 0.0)
    steep = np.clip(full["slope_deg"].to_numpy() / config.slope_ref_deg, 0.3, 2.0)
    labels = full["landslide"].to_numpy().astype(bool)
    for i in range(n):
        images[i], masks[i] = synth_patch(
            rng, has_landslide=bool(labels[i]), size=s, cloud_fraction=float(cloud[i]), steepness=float(steep[i])
        )
    latent = full[["region_id", *latent_cols]].copy()
    latent["cloud_fraction"] = cloud
    return PairedRegions(table.reset_index(drop=True), images, masks, latent.reset_index(drop=True))
