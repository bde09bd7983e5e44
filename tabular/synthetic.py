"""Seeded synthetic region table with a documented landslide mechanism.

Each row is one mapping region (e.g. a slope unit) in a 1 x 1 degree box. Columns and units:

==================  =====================================================================
``region_id``       int, 0..n-1
``lon``, ``lat``    WGS84 degrees (box 85-86 E, 27.5-28.5 N)
``elevation_m``     mean elevation, metres a.s.l. (smooth field of lon/lat, 300-3600 m)
``relief_m``        max - min elevation inside the region, metres
``slope_deg``       mean slope, degrees (0-60), grows with relief
``curvature``       total curvature, 1/100 m (ArcGIS convention: > 0 convex, < 0 concave hollow)
``rain_30d_mm``     30-day antecedent rainfall, mm (wetter to the east)
``rain_7d_mm``      7-day rainfall, mm (a share of the 30-day total)
``soil_moisture``   volumetric water content, m3/m3 (0.03-0.55)
``lithology``       one of ``granite, limestone, sandstone, shale, volcanic_ash, alluvium``
``land_cover``      one of ``forest, grassland, cropland, urban, bare``
``ndvi``            NDVI, dimensionless (-0.1-0.95), driven by land cover
``dist_river_m``    distance to the nearest river, metres
``dist_road_m``     distance to the nearest road, metres
``landslide``       0/1 label
==================  =====================================================================

Mechanism (the label depends on the features only through this, plus noise):

1. *Susceptibility* from the infinite-slope factor of safety
   ``FS = c / (g_s * z * sin(b) * cos(b)) + (1 - m * g_w / g_s) * tan(phi) / tan(b)``
   with slope ``b``, soil unit weight ``g_s = 18 kN/m3``, water ``g_w = 9.81 kN/m3``, soil depth
   ``z`` (m, per lithology), cohesion ``c`` = lithology cohesion + root cohesion
   ``10 kPa * max(ndvi - 0.2, 0)``, friction angle ``phi`` per lithology, and wetness
   ``m = clip((soil_moisture - 0.10) / 0.35, 0, 1)``. ``latent_susceptibility = -log(FS)``.
2. *Trigger* from the 7-day rainfall: ``latent_trigger = log((rain_7d_mm + 1) / 60)``.
3. Log-odds ``= 2.2 * susceptibility + 1.3 * trigger + 0.8 * exp(-dist_river_m / 250)
   + 0.6 * exp(-dist_road_m / 120) - 0.15 * curvature + intercept + N(0, 0.6)``; the intercept is
   solved so that the mean probability is 0.28. ``latent_p = sigmoid(log-odds)`` and
   ``landslide ~ Bernoulli(latent_p)``.

So steep, wet, weak (shale, volcanic ash), bare or urban slopes near rivers and road cuts,
hit by heavy weekly rain, slide most often. Expect a positive rate of about 25-32 %.
With ``return_latent=True`` the hidden columns ``latent_fs``, ``latent_susceptibility``,
``latent_trigger``, ``latent_logit`` and ``latent_p`` are added (for paired imagery generators;
never use them as features).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LITHOLOGY: dict[str, tuple[float, float, float]] = {
    # name: (cohesion kPa, friction angle deg, soil depth m)
    "granite": (9.0, 38.0, 1.2),
    "limestone": (8.0, 36.0, 1.0),
    "sandstone": (6.0, 34.0, 1.5),
    "shale": (3.0, 26.0, 2.0),
    "volcanic_ash": (2.0, 30.0, 2.5),
    "alluvium": (1.0, 32.0, 1.8),
}
LITHOLOGY_P = (0.2, 0.15, 0.2, 0.2, 0.1, 0.15)
LAND_COVER_NDVI: dict[str, float] = {"forest": 0.75, "grassland": 0.5, "cropland": 0.45, "urban": 0.2, "bare": 0.1}
LAND_COVER_P = (0.4, 0.2, 0.2, 0.08, 0.12)
FEATURE_COLUMNS: tuple[str, ...] = (
    "slope_deg",
    "elevation_m",
    "relief_m",
    "curvature",
    "rain_7d_mm",
    "rain_30d_mm",
    "soil_moisture",
    "lithology",
    "land_cover",
    "dist_river_m",
    "dist_road_m",
    "ndvi",
)
TARGET_COLUMN = "landslide"
TARGET_RATE = 0.28

_G_SOIL = 18.0
_G_WATER = 9.81


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _solve_intercept(logit: np.ndarray, target: float) -> float:
    """Bisection for b with mean(sigmoid(logit + b)) == target."""
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if _sigmoid(logit + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def factor_of_safety(
    slope_deg: np.ndarray, cohesion_kpa: np.ndarray, phi_deg: np.ndarray, depth_m: np.ndarray, wetness: np.ndarray
) -> np.ndarray:
    """Infinite-slope factor of safety (dimensionless; < 1 means failure), slope clipped to >= 1 degree."""
    b = np.radians(np.clip(slope_deg, 1.0, 89.0))
    phi = np.radians(phi_deg)
    cohesive = cohesion_kpa / (_G_SOIL * depth_m * np.sin(b) * np.cos(b))
    frictional = (1.0 - wetness * _G_WATER / _G_SOIL) * np.tan(phi) / np.tan(b)
    return cohesive + frictional


def make_region_table(n_regions: int = 4000, seed: int = 0, return_latent: bool = False) -> pd.DataFrame:
    """Generate ``n_regions`` synthetic regions (see the module docstring for columns and mechanism).

    Deterministic for a given ``(n_regions, seed)``. Raises ValueError for ``n_regions < 1``.
    """
    if n_regions < 1:
        raise ValueError(f"n_regions must be >= 1, got {n_regions}")
    rng = np.random.default_rng(seed)
    n = n_regions
    lon = rng.uniform(85.0, 86.0, n)
    lat = rng.uniform(27.5, 28.5, n)
    u, v = (lon - 85.0) * 2 * np.pi, (lat - 27.5) * 2 * np.pi
    field = 0.5 + 0.25 * np.sin(1.3 * u + 0.4) * np.cos(0.9 * v) + 0.2 * (lat - 27.5) + 0.1 * np.sin(2.7 * v)
    elevation = np.clip(300.0 + 3000.0 * field + rng.normal(0, 120, n), 300.0, 3600.0)
    relief = np.clip(rng.lognormal(np.log(40 + 0.12 * elevation), 0.45), 5.0, 2000.0)
    slope = np.clip(np.degrees(np.arctan(relief / 650.0 * rng.lognormal(0.0, 0.3, n))), 0.5, 60.0)
    curvature = rng.normal(0.0, 1.0, n)

    lith_names = np.array(list(LITHOLOGY))
    lith = rng.choice(lith_names, size=n, p=LITHOLOGY_P)
    cover_names = np.array(list(LAND_COVER_NDVI))
    cover = rng.choice(cover_names, size=n, p=LAND_COVER_P)
    ndvi_mean = np.array([LAND_COVER_NDVI[c] for c in cover])
    ndvi = np.clip(ndvi_mean - 0.0001 * (elevation - 1500).clip(0) + rng.normal(0, 0.08, n), -0.1, 0.95)

    rain_30 = rng.gamma(4.0, (150.0 + 200.0 * (lon - 85.0)) / 4.0)
    rain_7 = rain_30 * rng.beta(2.0, 4.0, n)
    soil_moisture = np.clip(
        0.08 + 0.35 * (1.0 - np.exp(-rain_30 / 250.0)) - 0.02 * curvature + rng.normal(0, 0.04, n), 0.03, 0.55
    )
    dist_river = rng.exponential(800.0, n)
    dist_road = rng.exponential(1500.0, n)

    coh = np.array([LITHOLOGY[x][0] for x in lith]) + 10.0 * np.maximum(ndvi - 0.2, 0.0)
    phi = np.array([LITHOLOGY[x][1] for x in lith])
    depth = np.array([LITHOLOGY[x][2] for x in lith])
    wetness = np.clip((soil_moisture - 0.10) / 0.35, 0.0, 1.0)
    fs = np.maximum(factor_of_safety(slope, coh, phi, depth, wetness), 0.05)
    susceptibility = -np.log(fs)
    trigger = np.log((rain_7 + 1.0) / 60.0)
    logit = (
        2.2 * susceptibility
        + 1.3 * trigger
        + 0.8 * np.exp(-dist_river / 250.0)
        + 0.6 * np.exp(-dist_road / 120.0)
        - 0.15 * curvature
        + rng.normal(0, 0.6, n)
    )
    logit = logit + _solve_intercept(logit, TARGET_RATE)
    p = _sigmoid(logit)
    label = (rng.uniform(size=n) < p).astype(np.int64)

    df = pd.DataFrame(
        {
            "region_id": np.arange(n, dtype=np.int64),
            "lon": lon.round(5),
            "lat": lat.round(5),
            "slope_deg": slope.round(2),
            "elevation_m": elevation.round(1),
            "relief_m": relief.round(1),
            "curvature": curvature.round(3),
            "rain_7d_mm": rain_7.round(1),
            "rain_30d_mm": rain_30.round(1),
            "soil_moisture": soil_moisture.round(3),
            "lithology": pd.Categorical(lith, categories=list(LITHOLOGY)),
            "land_cover": pd.Categorical(cover, categories=list(LAND_COVER_NDVI)),
            "dist_river_m": dist_river.round(1),
            "dist_road_m": dist_road.round(1),
            "ndvi": ndvi.round(3),
            TARGET_COLUMN: label,
        }
    )
    if return_latent:
        df["latent_fs"] = fs
        df["latent_susceptibility"] = susceptibility
        df["latent_trigger"] = trigger
        df["latent_logit"] = logit
        df["latent_p"] = p
    return df
