"""Tiles that cannot hold a landslide, by rule: decided per tile before the network runs (``predict_scene``).

A tile of the scene loop is **not run** when, over its valid (unmasked) pixels:

* ``masked``: it has none (every pixel nodata or a masked SCL class); its pixels stay nodata with their mask
  reason (they were never "no landslide"). This holds with ``--no-skip`` too: there is nothing to predict.
* ``water``: every valid pixel is SCL class 6 (water): a lake or the sea shows no landslide scar;
* ``flat``: a DEM is given and the steepest slope of the tile is below :data:`FLAT_SLOPE_DEG` degrees.
  Why 5 degrees: slides, flows and falls start on slopes; inventories (and this project's Landslide4Sense
  patches) hold almost no landslide pixel where no slope of the surroundings reaches 5 degrees, and the rule
  takes the *steepest* pixel of a 1.28 km tile (128 px at 10 m), so a tile is skipped only when all of it
  is plain. Lateral spreads (liquefaction) move on gentler ground: map those with ``--no-skip`` or a lower
  ``--flat-slope-deg``.

Pixels of a ``water`` or ``flat`` tile that no run tile covers are written as probability 0 (mask 0) and
counted by reason in the summary (``skipped_share``, ``skipped_by``, ``tiles.skipped_by``), so a skipped
area always carries its trace. ``--no-skip`` runs every tile that has a valid pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The flat-ground rule: a tile whose steepest slope (degrees) is below this is not run (module docstring).
FLAT_SLOPE_DEG = 5.0
#: SCL class of water (Sentinel-2 L2A scene classification).
SCL_WATER = 6
#: Reasons a tile is not run, in code order (code = 1 + index; 0 = run).
SKIP_REASONS: tuple[str, ...] = ("masked", "water", "flat")


@dataclass(frozen=True)
class SkipRules:
    """``enabled=False`` (``--no-skip``) runs every tile with a valid pixel; ``flat_slope_deg``: the flat rule."""

    enabled: bool = True
    flat_slope_deg: float = FLAT_SLOPE_DEG


def skip_reason(
    valid: np.ndarray,
    water: np.ndarray | None = None,
    slope_deg: np.ndarray | None = None,
    rules: SkipRules = SkipRules(),
) -> str | None:
    """Why the tile is not run (one of :data:`SKIP_REASONS`), or ``None`` to run it.

    Args:
        valid: ``(h, w)`` bool, the tile's unmasked pixels.
        water: ``(h, w)`` bool, SCL water pixels (``None``: no SCL band).
        slope_deg: ``(h, w)`` slope in degrees (``None``: no DEM).
        rules: the rules in force.
    """
    if not valid.any():
        return "masked"
    if not rules.enabled:
        return None
    if water is not None and bool(water[valid].all()):
        return "water"
    if slope_deg is not None:
        s = slope_deg[valid]
        s = s[np.isfinite(s)]
        if s.size and float(s.max()) < rules.flat_slope_deg:
            return "flat"
    return None


def plan_tiles(
    cols: list[int],
    width: int,
    valid: np.ndarray,
    water: np.ndarray | None,
    slope_deg: np.ndarray | None,
    rules: SkipRules,
) -> tuple[list[int], dict[int, str]]:
    """Split one row of tiles (column starts ``cols``, ``width`` px wide, over row arrays ``(h, W)``) into the
    starts to run and ``{start: reason}`` of those not run (:func:`skip_reason` on each)."""
    run: list[int] = []
    skipped: dict[int, str] = {}
    for x in cols:
        sl = np.s_[:, x : x + width]
        reason = skip_reason(
            valid[sl],
            None if water is None else water[sl],
            None if slope_deg is None else slope_deg[sl],
            rules,
        )
        if reason is None:
            run.append(x)
        else:
            skipped[x] = reason
    return run, skipped


def reason_code(name: str) -> int:
    """The code of a skip reason (1 + its index in :data:`SKIP_REASONS`)."""
    return SKIP_REASONS.index(name) + 1


__all__ = ["FLAT_SLOPE_DEG", "SCL_WATER", "SKIP_REASONS", "SkipRules", "plan_tiles", "reason_code", "skip_reason"]
