"""The 14 Landslide4Sense (L4S) bands, in file order, and their reference statistics.

Band order (0-based index in an L4S patch, channel-first ``(14, H, W)`` in memory,
``(H, W, 14)`` on disk):

====  =======  ==========================================================
idx   name     meaning
====  =======  ==========================================================
0     B1       Sentinel-2 coastal aerosol (443 nm)
1     B2       blue (490 nm)
2     B3       green (560 nm)
3     B4       red (665 nm)
4-6   B5-B7    red edge (705 / 740 / 783 nm)
7     B8       NIR (842 nm)
8     B9       water vapour (945 nm)
9     B10      SWIR cirrus (1375 nm); real patches show spikes up to ~50
10    B11      SWIR1 (1610 nm)
11    B12      SWIR2 (2190 nm)
12    slope    ALOS PALSAR slope
13    DEM      ALOS PALSAR elevation
====  =======  ==========================================================

Units: L4S ships *pre-scaled* values (each band is roughly divided by its mean over the
data set, so bands sit around 1.0); they are neither reflectance nor metres.
Always refer to a band by name through :func:`band_index`, never by a literal index.
"""

from __future__ import annotations

import numpy as np

BANDS: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "DEM")
N_BANDS: int = len(BANDS)

#: Common names accepted by :func:`band_index` (case-insensitive).
BAND_ALIASES: dict[str, str] = {
    "coastal": "B1",
    "aerosol": "B1",
    "blue": "B2",
    "green": "B3",
    "red": "B4",
    "rededge1": "B5",
    "rededge2": "B6",
    "rededge3": "B7",
    "nir": "B8",
    "watervapour": "B9",
    "watervapor": "B9",
    "cirrus": "B10",
    "swir1": "B11",
    "swir2": "B12",
    "elevation": "DEM",
    "dem": "DEM",
    "slope": "slope",
}

#: Per-band mean used by the official L4S baseline loader (iarai/Landslide4Sense-2022),
#: which computes ``(x - L4S_MEAN) / L4S_STD`` on the pre-scaled values. Values as
#: published (copied into ../shared/data/landslide4sense_camduc/SOURCE.md).
L4S_MEAN: np.ndarray = np.array(
    [
        -0.4914,
        -0.3074,
        -0.1277,
        -0.0625,
        0.0439,
        0.0803,
        0.0644,
        0.0802,
        0.3000,
        0.4082,
        0.0823,
        0.0516,
        0.3338,
        0.7819,
    ],
    dtype=np.float32,
)
#: Per-band std of the official L4S baseline loader (see :data:`L4S_MEAN`).
L4S_STD: np.ndarray = np.array(
    [0.9325, 0.8775, 0.8860, 0.8869, 0.8857, 0.8418, 0.8354, 0.8491, 0.9061, 1.6072, 0.8848, 0.9232, 0.9018, 1.2913],
    dtype=np.float32,
)

#: The seed's per-band means in *raw* units (``img_mean`` in the RAU-Net authors'
#: ``train-code/hyper_parameter.py``, CamDucLe/Landslide-Project-Sentinel2). L4S divided each
#: raw band by (approximately) these values to produce the pre-scaled files, so
#: ``x * L4S_BAND_MEANS`` approximately recovers raw DN / metres (the design note's
#: "un-scaling" flag, section 5) and ``raw / L4S_BAND_MEANS`` is the "divide by band mean" rule.
L4S_BAND_MEANS: np.ndarray = np.array(
    [
        1111.81236406,
        824.63171476,
        663.41636217,
        445.17289745,
        645.8582926,
        1547.73508126,
        1960.44401001,
        1941.32229668,
        674.07572865,
        9.04787384,
        1113.98338755,
        519.90397929,
        20.29228266,
        772.83144788,
    ],
    dtype=np.float32,
)

#: Robust per-band upper bounds for clipping (pre-scaled units): about 2x the largest
#: 99.9th percentile seen in the 25 real patches in ../shared/data, rounded up. The cirrus
#: band B10 keeps a higher bound because clouds legitimately push it to ~13; its spike of
#: ~50 in unlabelled patches is clipped to 20. Slope/DEM are bounded at 10 (real max < 5).
L4S_CLIP_MAX: np.ndarray = np.array(
    [5.0, 6.0, 7.0, 10.0, 7.0, 5.0, 5.0, 5.0, 8.0, 20.0, 7.0, 10.0, 10.0, 10.0],
    dtype=np.float32,
)


def band_index(name: str) -> int:
    """0-based index of band ``name`` in an L4S patch.

    Accepts the canonical names in :data:`BANDS` (``"B8"``, ``"slope"``, ``"DEM"``, any case)
    and aliases (``"NIR"`` -> B8, ``"red"`` -> B4, ``"green"`` -> B3, ``"blue"`` -> B2,
    ``"SWIR1"`` -> B11, ``"SWIR2"`` -> B12, ``"cirrus"`` -> B10, ...).
    Raises ``ValueError`` naming the unknown band and the accepted names.
    """
    if not isinstance(name, str):
        raise ValueError(f"band name must be a string, got {name!r}")
    key = name.strip()
    upper = {b.upper(): i for i, b in enumerate(BANDS)}
    if key.upper() in upper:
        return upper[key.upper()]
    alias = BAND_ALIASES.get(key.lower().replace("_", "").replace("-", "").replace(" ", ""))
    if alias is not None:
        return BANDS.index(alias)
    raise ValueError(
        f"unknown band {name!r}; expected one of {', '.join(BANDS)} or an alias ({', '.join(BAND_ALIASES)})"
    )


def band_indices(names: tuple[str, ...] | list[str]) -> list[int]:
    """Indices of several bands, in the given order (see :func:`band_index`)."""
    return [band_index(n) for n in names]
