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

Band names: wherever a band is named (``--bands``, ``--image-bands``, file names, STAC asset keys),
:func:`canonical_band` accepts the names above, zero-padded spellings (``B02``), ``B8A`` and ``SCL``
(Sentinel-2 bands outside the L4S set: read, never fed to a model), and the aliases of
:data:`BAND_ALIASES` (``red``, ``nir``, ``swir16``, ... the Earth Search v1 asset keys).

Model units (the one place they are defined)
--------------------------------------------
Every model of this project is trained and run in **L4S units** (:data:`MODEL_UNITS` ``"l4s"``),
whatever its data came from. From physical values:

* spectral band ``Bk``: ``reflectance * 10000 / L4S_BAND_MEANS[k]`` (reflectance 0..1; ``x 10000`` is
  the Sentinel-2 digital-number scale the L4S means were computed in);
* ``slope``: ``degrees / L4S_BAND_MEANS[slope]`` (20.29); ``DEM``: ``metres / L4S_BAND_MEANS[DEM]`` (772.83).

:func:`to_model_units` applies this. Digital numbers become reflectance first, with the product's own
scale and offset (``imagery.data.sentinel2``: ``reflectance = DN * scale + offset``, e.g. ``scale=1e-4``,
``offset=-0.1`` for L2A processing baseline 04.00 and later); georeferenced chips say their scale with
``--image-scale`` (``imagery.data.chips``). The model's band list and units are stored with it
(``SegmenterMeta.band_order`` / ``units``) and checked at prediction time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from common.cli import UserError
from imagery.data.choices import (  # noqa: F401 - declared there (no NumPy: --help), re-exported here
    DEFAULT_COLLECTION,
    DEFAULT_STAC_URL,
    IMAGE_SCALES,
    SCENE_SCALES,
    SENSORS,
    TEMPORAL_SETS,
    ImageScale,
    SceneScale,
    Sensor,
    TemporalSet,
)

BANDS: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "DEM")
N_BANDS: int = len(BANDS)

#: Sentinel-2 bands that are not in the L4S set: ``B8A`` (narrow NIR, 865 nm; L4S has none, so it is never a
#: substitute for ``B8``) and ``SCL`` (the L2A scene classification layer, classes, not reflectance).
EXTRA_S2_BANDS: tuple[str, ...] = ("B8A", "SCL")
#: Every band name a file, a STAC asset or a flag may name (canonical spellings).
KNOWN_BANDS: tuple[str, ...] = (*BANDS, *EXTRA_S2_BANDS)

#: Common names accepted wherever a band is named (case-insensitive; ``_``, ``-`` and spaces ignored).
#: Includes the Earth Search v1 STAC asset keys (``coastal``, ``blue`` ... ``nir08``, ``nir09``, ``swir16``,
#: ``swir22``, ``scl``). Zero-padded spellings (``B02``, ``B08``) are accepted too (see :func:`canonical_band`).
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
    "nir08": "B8A",
    "narrownir": "B8A",
    "nir09": "B9",
    "watervapour": "B9",
    "watervapor": "B9",
    "cirrus": "B10",
    "swir1": "B11",
    "swir16": "B11",
    "swir2": "B12",
    "swir22": "B12",
    "scl": "SCL",
    "sceneclassification": "SCL",
    "elevation": "DEM",
    "dem": "DEM",
    "slope": "slope",
}
_SPECTRAL_RE = re.compile(r"^B0*(\d{1,2}|8A)$", re.IGNORECASE)

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


#: The units every model sees (see the module docstring, "Model units").
MODEL_UNITS = "l4s"
#: Physical units of each kind of band before :func:`to_model_units`.
PHYSICAL_UNITS = {"spectral": "reflectance (0-1)", "slope": "degrees", "DEM": "metres"}
#: Sentinel-2 digital numbers per unit of reflectance (DN = reflectance x 10000, before any offset).
S2_DN_PER_REFLECTANCE = 10000.0


def model_unit_factor(band: str) -> float:
    """Multiply a physical value of ``band`` by this to get L4S model units (see "Model units")."""
    i = band_index(band)
    dn = S2_DN_PER_REFLECTANCE if BANDS[i] not in ("slope", "DEM") else 1.0
    return float(dn / float(L4S_BAND_MEANS[i]))


def to_model_units(values: np.ndarray, bands: Iterable[str]) -> np.ndarray:
    """``(C, H, W)`` (or ``(N, C, H, W)``) physical values of ``bands`` (reflectance, slope degrees, DEM metres)
    as float32 L4S model units; NaN stays NaN."""
    names = list(bands)
    arr = np.asarray(values, dtype=np.float32)
    cdim = arr.ndim - 3
    if arr.ndim not in (3, 4) or arr.shape[cdim] != len(names):
        raise ValueError(f"values of shape {arr.shape} do not hold the {len(names)} bands {names}")
    factors = np.array([model_unit_factor(b) for b in names], dtype=np.float32).reshape(-1, 1, 1)
    return arr * factors


def canonical_band(name: str) -> str:
    """The canonical spelling of a band name: one of :data:`KNOWN_BANDS`.

    Accepts the canonical names (``"B8"``, ``"B8A"``, ``"slope"``, ``"DEM"``, ``"SCL"``, any case), zero-padded
    spellings (``"B02"`` -> ``"B2"``, ``"B08"`` -> ``"B8"``, ``"B8A"``), and the aliases of :data:`BAND_ALIASES`
    (``"red"`` -> ``"B4"``, ``"nir"`` -> ``"B8"``, ``"nir08"`` -> ``"B8A"``, ``"swir16"`` -> ``"B11"``, ...).
    Raises :class:`common.cli.UserError` naming the unknown band and the accepted names.
    """
    if not isinstance(name, str):
        raise UserError(f"band name must be a string, got {name!r}")
    key = name.strip()
    m = _SPECTRAL_RE.match(key)
    if m:
        num = m.group(1).upper()
        cand = "B8A" if num == "8A" else f"B{int(num)}"
        if cand in KNOWN_BANDS:
            return cand
    upper = {b.upper(): b for b in KNOWN_BANDS}
    if key.upper() in upper:
        return upper[key.upper()]
    alias = BAND_ALIASES.get(key.lower().replace("_", "").replace("-", "").replace(" ", ""))
    if alias is not None:
        return alias
    raise UserError(
        f"unknown band {name!r}; expected one of {', '.join(KNOWN_BANDS)}, a zero-padded name such as B02, "
        f"or an alias ({', '.join(BAND_ALIASES)})"
    )


def canonical_bands(names: Iterable[str], *, l4s_only: bool = True, what: str = "--bands") -> tuple[str, ...]:
    """Canonical names of ``names`` in L4S order (:data:`BANDS`), duplicates removed.

    With ``l4s_only`` a band outside the L4S set (``B8A``, ``SCL``) is a :class:`common.cli.UserError` naming
    ``what``: models are trained on L4S bands only. An empty list is an error too.
    """
    out = {canonical_band(n) for n in names}
    if not out:
        raise UserError(f"{what}: no band named; expected a comma-separated list such as B2,B3,B4,B8")
    if l4s_only:
        extra = sorted(out - set(BANDS))
        if extra:
            raise UserError(
                f"{what}: {', '.join(extra)} is not one of the L4S model bands ({', '.join(BANDS)}); "
                "B8A (narrow NIR) is a different band from B8 and L4S has none"
            )
    return tuple(b for b in KNOWN_BANDS if b in out)


def band_index(name: str) -> int:
    """0-based index of band ``name`` in an L4S patch.

    Accepts the canonical names in :data:`BANDS` (``"B8"``, ``"slope"``, ``"DEM"``, any case)
    and aliases (``"NIR"`` -> B8, ``"red"`` -> B4, ``"green"`` -> B3, ``"blue"`` -> B2,
    ``"SWIR1"`` -> B11, ``"SWIR2"`` -> B12, ``"cirrus"`` -> B10, ...).
    Raises ``ValueError`` naming the unknown band and the accepted names.
    """
    band = canonical_band(name)
    if band not in BANDS:
        raise UserError(f"band {name!r} ({band}) is not one of the 14 L4S bands ({', '.join(BANDS)})")
    return BANDS.index(band)


def band_indices(names: tuple[str, ...] | list[str]) -> list[int]:
    """Indices of several bands, in the given order (see :func:`band_index`)."""
    return [band_index(n) for n in names]


#: Marks a temporal channel name (``B04@post``, ``imagery.data.sen12_temporal``): a model whose band set holds one
#: takes its channels as they are (no L4S cleaning, clipping or feature engineering).
TEMPORAL_MARK = "@"


def is_temporal_band_set(bands: Iterable[str] | None) -> bool:
    """True when ``bands`` names temporal channels (any name holding :data:`TEMPORAL_MARK`)."""
    return any(TEMPORAL_MARK in str(b) for b in (bands or ()))
