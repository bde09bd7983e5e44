"""A synthetic table shaped like the seed study's Carinthia data (one row per 10 m cell), any size.

The study's table (57,842,689 rows; ``../shared/data/gaia_carinthia_stats/``) is not public; its
schema and per-column statistics are, and :data:`STATS` holds them (column, dtype, missing count of
57,842,689, mean, std, min, quartiles, max; numbers unchanged). :func:`write_carinthia_like` writes a
hive-partitioned Parquet dataset (``partition=1/part-0.parquet``, ...) with

* the study's 42 feature columns and dtypes (float64; ``geomorphons`` and ``clc`` categorical: written
  as Arrow dictionaries of int16 class codes, which Parquet stores as the codes (int16 when read back
  as a dataset), and declared categorical in the table metadata; ``forest_cover`` all 0 as in the
  export), ``x``/``y`` (cell centres, float64, metres, replacing the study's WKB ``geometry``) and the
  label ``slide`` (int8 0/1);
* cells on a 10 m grid in EPSG:3416 (ETRS89 / Austria Lambert), filled row by row (north to south)
  over a rectangle about twice as wide as high; not real geography;
* marginals built to the study's: each column is ``Q(Phi(z))`` with ``z`` a standardised latent
  value and ``Q`` a quantile function through the exact min, quartiles and max, piecewise linear
  between the quartiles and power-shaped in the two outer quarters, the two tail exponents solved so
  that the mean and standard deviation match (closed form moments; columns with extreme tails such
  as ``flow_accumulation`` match their quartiles exactly and their mean/std approximately);
* missing values at the study's rates (climate columns share one mask, the surface-water columns
  another, as their equal counts suggest);
* spatial coherence: latent ``z`` of a column = 0.8 x its group's smooth field + 0.6 x white noise,
  a group field being bilinearly interpolated Gaussian noise at 2 km and 300 m spacing. Groups:
  elevation, ruggedness (slope, roughness, TRI, ...), curvature, flow, aspect/exposure, climate,
  surface water, distance.

**Label mechanism** (the truth a model should recover). With the latent values of slope ``zs``,
annual precipitation ``zp``, convergence index ``zc`` and TWI ``zw``, a land-cover term ``forest``
(1 for CORINE forest classes 311-313) and a fine smooth field ``F`` (60 m spacing: landslides come
in patches), ::

    logit = b0 + 1.1 zs + 0.5 zp + 0.45 zc + 0.35 zw + 0.4 zs zp - 0.5 forest + 1.2 F
    slide ~ Bernoulli(sigmoid(logit))

``b0`` is solved once (Monte Carlo on 400,000 draws) so that the expected positive rate is
``positive_rate`` (default 0.4 %: the study kept positives in one file against nine of negatives and
landslide cells are a small minority). Everything depends only on ``seed``; memory holds one block
of ``block_rows`` grid rows at a time.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.optimize import least_squares
from scipy.special import expit, ndtr

from common.atomic import check_free_space
from common.cli import UserError
from tabular.config import STUDY_ROWS
from tabular.large.source import PartWriter, atomic_dataset_dir, table_metadata

CRS = "EPSG:3416"
CELL_M = 10.0
ORIGIN = (380_000.0, 420_000.0)  # top-left corner (x, y) of the first row, metres
TARGET = "slide"

STATS_CSV = """column,dtype,nulls,mean,std,min,q25,q50,q75,max
aspect_arctan2,float64,91800,-1.506993e+01,1.017421e+02,-1.799998e+02,-1.035135e+02,-2.434787e+01,6.716537e+01,1.800000e+02
convergence_index,float64,0,-3.010422e-03,1.249643e+01,-1.000000e+02,-3.976873e+00,2.305334e-01,4.382882e+00,1.000000e+02
convexity,float64,0,5.022914e+01,6.137045e+00,0.000000e+00,4.652510e+01,5.013230e+01,5.386090e+01,8.557341e+01
curv_max,float64,0,2.209213e-03,3.641184e-03,-3.450267e-02,1.765737e-04,1.294217e-03,3.153937e-03,9.251083e-02
curv_min,float64,0,-2.208881e-03,3.715380e-03,-7.970897e-02,-3.293562e-03,-1.233153e-03,-1.119268e-04,3.903838e-02
curv_plan,float64,0,9.335232e-06,3.065385e-02,-4.359097e+01,-4.798883e-03,-3.357635e-04,4.146717e-03,7.630254e+01
curv_prof,float64,0,-8.142383e-05,2.489159e-03,-5.609919e-02,-1.016666e-03,-1.601348e-05,9.499996e-04,5.556353e-02
dah,float64,0,3.063371e-02,2.871867e-01,-9.644365e-01,-1.738013e-01,2.775106e-02,2.426841e-01,9.651864e-01
elevation,float64,0,1.336590e+03,5.900124e+02,3.376620e+02,8.730110e+02,1.241517e+03,1.729197e+03,3.795406e+03
flow_accumulation,float64,0,9.359132e+05,6.361580e+07,1.000000e+02,7.750892e+02,1.689277e+03,3.698563e+03,1.166013e+10
flow_path_length,float64,0,9.798343e+02,1.154437e+03,0.000000e+00,3.363578e+02,6.952010e+02,1.268187e+03,1.939430e+04
flow_width,float64,0,1.274755e+01,1.230222e+00,1.000000e+01,1.180947e+01,1.305810e+01,1.386186e+01,1.414214e+01
geomorphons,category,0,,,,,,,
maximum_height,float64,0,1.384245e+03,6.068815e+02,3.380012e+02,9.083956e+02,1.292172e+03,1.795379e+03,3.795406e+03
mrn,float64,0,2.735158e+00,2.659842e+00,0.000000e+00,4.972967e-01,2.157187e+00,4.136443e+00,7.082149e+01
nto,float64,0,1.326907e+00,1.214737e-01,2.596900e-02,1.261233e+00,1.330639e+00,1.395058e+00,1.658318e+00
pto,float64,0,1.325863e+00,1.127587e-01,9.796431e-03,1.256683e+00,1.337563e+00,1.409218e+00,1.684121e+00
roughness,float64,0,1.115727e+01,7.541400e+00,0.000000e+00,6.168701e+00,1.011926e+01,1.481909e+01,1.029372e+03
sca,float64,0,6.079053e+01,6.592934e+02,7.071068e-01,1.490129e+00,4.250215e+00,1.277684e+01,1.379945e+05
slope,float64,0,2.189938e+01,1.212664e+01,0.000000e+00,1.328473e+01,2.141256e+01,2.993320e+01,8.779026e+01
spi,float64,0,2.084166e+01,2.123465e+02,0.000000e+00,5.005055e-01,1.658227e+00,5.273488e+00,8.375304e+04
svf,float64,0,9.004335e-01,7.994817e-02,-1.675759e-01,8.624397e-01,9.205607e-01,9.598454e-01,9.999983e-01
tpi,float64,0,5.078170e-05,1.128779e+00,-1.020760e+03,-3.255615e-01,2.685547e-03,3.315430e-01,3.850073e+02
tri,float64,0,1.097325e+01,7.474286e+00,0.000000e+00,6.147493e+00,9.979896e+00,1.449461e+01,2.887163e+03
twi,float64,0,3.499083e+00,1.744297e+00,-1.555013e+00,2.541824e+00,3.093476e+00,3.742749e+00,1.525545e+01
vrm,float64,0,4.560716e-03,1.158394e-02,-2.413950e-08,4.418442e-04,1.374223e-03,4.003421e-03,7.842655e-01
wei,float64,0,1.043814e+00,1.066528e-01,7.588920e-01,9.678068e-01,1.049524e+00,1.121307e+00,1.343600e+00
clc,category,10,,,,,,,
forest_cover,float64,0,0,0,0,0,0,0,0
cwd,float64,17099,1.121073e+01,2.072784e+00,8.000000e+00,9.550000e+00,1.110000e+01,1.230000e+01,2.165000e+01
prcptot,float64,17099,1.289544e+03,3.040191e+02,8.225050e+02,1.065835e+03,1.214160e+03,1.430870e+03,3.369255e+03
sdii,float64,17099,1.032186e+01,1.296731e+00,7.052250e+00,9.450291e+00,1.013698e+01,1.089247e+01,1.608886e+01
rx5day,float64,17099,1.564953e+02,6.693086e+01,9.208000e+01,1.098750e+02,1.239700e+02,2.041100e+02,3.831600e+02
rx1day,float64,17099,7.726410e+01,1.906433e+01,4.655500e+01,6.416500e+01,7.080000e+01,8.556500e+01,1.574850e+02
api_k7,float64,17099,5.541038e+01,9.819464e+00,3.942498e+01,4.830648e+01,5.309072e+01,6.009344e+01,1.096310e+02
api_k30,float64,17099,9.201388e+01,1.649696e+01,6.713113e+01,8.033698e+01,8.785324e+01,9.888637e+01,1.926326e+02
spei30,float64,17099,1.602221e+00,3.800221e-02,1.519363e+00,1.569960e+00,1.593250e+00,1.636415e+00,1.687673e+00
pci,float64,17099,1.180725e+01,5.203326e-01,9.607711e+00,1.156673e+01,1.188074e+01,1.216091e+01,1.293944e+01
sw_hazard_cat,float64,186270,4.598434e-01,6.894606e-01,0.000000e+00,0.000000e+00,0.000000e+00,1.000000e+00,3.000000e+00
sw_max_speed,float64,165393,3.416660e-01,4.622283e-01,3.510409e-04,1.338030e-01,2.082336e-01,3.425848e-01,5.000000e+00
sw_max_depth,float64,165393,7.602423e-02,2.850088e-01,9.997189e-04,1.104554e-02,2.042592e-02,4.751380e-02,4.000000e+00
sw_spec_runoff,float64,165393,1.060921e+02,7.859722e+02,6.002172e-03,1.439830e+00,3.750124e+00,1.297276e+01,2.000000e+04
dist,float64,0,1.483538e+02,1.545285e+02,4.246943e-03,3.513576e+01,8.649609e+01,2.014141e+02,5.000000e+02
"""
STATS = pd.read_csv(io.StringIO(STATS_CSV))

# latent group of every numeric column and the sign of its loading on the group field
GROUPS: dict[str, tuple[str, float]] = {
    "elevation": ("elev", 1.0),
    "maximum_height": ("elev", 1.0),
    "slope": ("rugged", 1.0),
    "roughness": ("rugged", 1.0),
    "tri": ("rugged", 1.0),
    "mrn": ("rugged", 1.0),
    "vrm": ("rugged", 1.0),
    "convexity": ("rugged", 0.5),
    "convergence_index": ("curv", 1.0),
    "curv_max": ("curv", -1.0),
    "curv_min": ("curv", -1.0),
    "curv_plan": ("curv", -1.0),
    "curv_prof": ("curv", -1.0),
    "tpi": ("curv", -1.0),
    "nto": ("curv", -1.0),
    "pto": ("curv", 1.0),
    "flow_accumulation": ("flow", 1.0),
    "flow_path_length": ("flow", 1.0),
    "flow_width": ("flow", 0.5),
    "sca": ("flow", 1.0),
    "twi": ("flow", 1.0),
    "spi": ("flow", 1.0),
    "aspect_arctan2": ("aspect", 1.0),
    "dah": ("aspect", 1.0),
    "wei": ("aspect", -1.0),
    "svf": ("aspect", -0.5),
    "cwd": ("climate", 1.0),
    "prcptot": ("climate", 1.0),
    "sdii": ("climate", 1.0),
    "rx5day": ("climate", 1.0),
    "rx1day": ("climate", 1.0),
    "api_k7": ("climate", 1.0),
    "api_k30": ("climate", 1.0),
    "spei30": ("climate", 1.0),
    "pci": ("climate", -1.0),
    "sw_hazard_cat": ("water", 1.0),
    "sw_max_speed": ("water", 1.0),
    "sw_max_depth": ("water", 1.0),
    "sw_spec_runoff": ("water", 1.0),
    "dist": ("dist", 1.0),
}
GROUP_NAMES = ("elev", "rugged", "curv", "flow", "aspect", "climate", "water", "dist")
GEOMORPHONS = np.arange(1, 11, dtype=np.int16)  # GRASS r.geomorphon: flat, summit, ridge, ... pit
CLC_CODES = np.array([112, 211, 231, 242, 243, 311, 312, 313, 321, 322, 324, 332, 333, 335, 411, 512], dtype=np.int16)
CLC_FOREST = (311, 312, 313)
SHARED_MASKS = {"climate": ["cwd", "prcptot", "sdii", "rx5day", "rx1day", "api_k7", "api_k30", "spei30", "pci"]}
WATER_MASK = ["sw_max_speed", "sw_max_depth", "sw_spec_runoff"]


@dataclass(frozen=True)
class Quantile:
    """A column's quantile function: knots ``q0..q4`` (min, quartiles, max) and tail exponents."""

    q: tuple[float, float, float, float, float]
    gamma_low: float
    gamma_high: float

    def __call__(self, u: np.ndarray) -> np.ndarray:
        q0, q1, q2, q3, q4 = self.q
        out = np.empty_like(u)
        lo = u < 0.25
        hi = u > 0.75
        mid = ~(lo | hi)
        out[lo] = q1 - (q1 - q0) * ((0.25 - u[lo]) / 0.25) ** self.gamma_low
        out[hi] = q3 + (q4 - q3) * ((u[hi] - 0.75) / 0.25) ** self.gamma_high
        um = u[mid]
        out[mid] = np.where(um < 0.5, q1 + (q2 - q1) * (um - 0.25) / 0.25, q2 + (q3 - q2) * (um - 0.5) / 0.25)
        return out

    def moments(self) -> tuple[float, float]:
        return _moments(self.q, self.gamma_low, self.gamma_high)


def _moments(q: tuple[float, ...], gl: float, gh: float) -> tuple[float, float]:
    q0, q1, q2, q3, q4 = q
    lo_span, hi_span = q1 - q0, q4 - q3
    m_lo = q1 - lo_span / (gl + 1)
    m_hi = q3 + hi_span / (gh + 1)
    e2_lo = q1**2 - 2 * q1 * lo_span / (gl + 1) + lo_span**2 / (2 * gl + 1)
    e2_hi = q3**2 + 2 * q3 * hi_span / (gh + 1) + hi_span**2 / (2 * gh + 1)
    e2_a = (q1**2 + q1 * q2 + q2**2) / 3
    e2_b = (q2**2 + q2 * q3 + q3**2) / 3
    mean = 0.25 * (m_lo + (q1 + q2) / 2 + (q2 + q3) / 2 + m_hi)
    e2 = 0.25 * (e2_lo + e2_a + e2_b + e2_hi)
    return mean, math.sqrt(max(e2 - mean**2, 0.0))


def fit_quantile(row: Any) -> Quantile:
    """The quantile function of a :data:`STATS` row (tail exponents fitted to its mean and std)."""
    q = (float(row.min), float(row.q25), float(row.q50), float(row.q75), float(row.max))
    mean, std = float(row.mean), float(row.std)
    if std == 0 or q[4] == q[0]:
        return Quantile(q, 1.0, 1.0)
    scale = std

    def resid(logg: np.ndarray) -> np.ndarray:
        m, s = _moments(q, math.exp(logg[0]), math.exp(logg[1]))
        return np.array([(m - mean) / scale, (s - std) / scale])

    sol = least_squares(resid, x0=np.array([0.0, 0.0]), bounds=([-3.0, -3.0], [16.0, 16.0]))
    return Quantile(q, float(math.exp(sol.x[0])), float(math.exp(sol.x[1])))


def grid_shape(rows: int) -> tuple[int, int]:
    """``(height, width)`` of the rectangle filled row by row with ``rows`` cells (about 2:1 wide)."""
    width = max(1, int(math.ceil(math.sqrt(rows * 2.0))))
    return int(math.ceil(rows / width)), width


class _Field:
    """Bilinearly interpolated Gaussian noise on a coarse lattice every ``step`` cells (seeded)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, step: int) -> None:
        self.step = step
        self.g = rng.standard_normal((height // step + 2, width // step + 2)).astype(np.float32)

    def rows(self, r0: int, r1: int, width: int) -> np.ndarray:
        s = self.step
        ry = (np.arange(r0, r1) + 0.5) / s
        cx = (np.arange(width) + 0.5) / s
        i0 = ry.astype(np.int64)
        j0 = cx.astype(np.int64)
        fy = (ry - i0).astype(np.float32)[:, None]
        fx = (cx - j0).astype(np.float32)[None, :]
        g = self.g
        top = g[i0][:, j0] * (1 - fx) + g[i0][:, j0 + 1] * fx
        bot = g[i0 + 1][:, j0] * (1 - fx) + g[i0 + 1][:, j0 + 1] * fx
        return (top * (1 - fy) + bot * fy) / np.float32(math.sqrt(4.0 / 9.0))


#: Bytes a row takes on disk (snappy Parquet of this generator's columns; measured at 308 on 300,000 rows).
DISK_BYTES_PER_ROW = 320
#: Working memory of one block of cells besides the noise lattices (arrays of the block's columns).
BLOCK_WORK_BYTES = 256 << 20


def estimate_bytes(rows: int) -> tuple[int, int]:
    """``(memory, disk)`` bytes that :func:`write_carinthia_like` needs for ``rows`` cells.

    Memory: the float32 noise lattices (two per factor group, one fine), the largest one also as the
    float64 draw it is made from, plus one block's working arrays. Disk: :data:`DISK_BYTES_PER_ROW` a row.
    """
    height, width = grid_shape(rows)
    sizes = [(height // s + 2) * (width // s + 2) for s in (200, 30)] * len(GROUP_NAMES)
    sizes.append((height // 6 + 2) * (width // 6 + 2))
    memory = 4 * sum(sizes) + 8 * max(sizes) + BLOCK_WORK_BYTES
    return memory, DISK_BYTES_PER_ROW * rows


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def check_resources(out: str | os.PathLike[str], rows: int) -> None:
    """Refuse, in one line, a table whose generation needs more memory than is available or more disk
    than ``out``'s disk has free (estimates: :func:`estimate_bytes`), before anything is allocated or written."""
    memory, disk = estimate_bytes(rows)
    free_mem = available_memory()
    if free_mem is not None and memory > free_mem:
        raise UserError(
            f"--rows {rows:,}: generating the table needs about {memory / 2**30:,.1f} GiB of memory, "
            f"{free_mem / 2**30:,.1f} GiB available; expected fewer rows"
        )
    check_free_space(Path(out).parent, disk, what=f"--rows {rows:,} (about {disk / 1e9:,.1f} GB)")


def _intercept(positive_rate: float, seed: int) -> float:
    """``b0`` so that the label mechanism's expected positive rate is ``positive_rate`` (Monte Carlo)."""
    rng = np.random.default_rng(seed + 17)
    n = 400_000
    zs, zp, zc, zw, f = rng.standard_normal((5, n))
    forest = rng.random(n) < 0.35
    rest = 1.1 * zs + 0.5 * zp + 0.45 * zc + 0.35 * zw + 0.4 * zs * zp - 0.5 * forest + 1.2 * f
    lo, hi = -40.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if expit(mid + rest).mean() > positive_rate:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class MakeTableResult:
    """What :func:`write_carinthia_like` wrote: folder, rows, positives, parts, grid shape, seconds."""

    out: str
    rows: int
    positives: int
    parts: int
    height: int
    width: int
    seconds: float


def write_carinthia_like(
    out: str | os.PathLike[str],
    rows: int,
    *,
    seed: int = 42,
    positive_rate: float = 0.004,
    rows_per_part: int = 2_000_000,
    block_rows: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> MakeTableResult:
    """Write a Carinthia-like hive-partitioned Parquet dataset of ``rows`` cells to folder ``out``.

    ``block_rows``: grid rows generated at once (0: about 250,000 cells). ``progress(done, total)``
    is called after every block. The folder is written under a temporary name and renamed at the end.
    """
    from common.geo import Grid  # noqa: PLC0415 - rasterio loads only when a table is written

    if rows < 1:
        raise UserError(f"--rows must be >= 1, got {rows}")
    if not 0 < positive_rate < 0.5:
        raise UserError(f"--positive-rate must be in (0, 0.5), got {positive_rate}")
    check_resources(out, rows)
    t_start = time.perf_counter()
    height, width = grid_shape(rows)
    grid = Grid(CRS, (CELL_M, 0.0, ORIGIN[0], 0.0, -CELL_M, ORIGIN[1]), width, height)
    rng = np.random.default_rng(seed)
    fields = {g: (_Field(rng, height, width, 200), _Field(rng, height, width, 30)) for g in GROUP_NAMES}
    fine = _Field(rng, height, width, 6)
    b0 = _intercept(positive_rate, seed)
    quantiles = {r.column: fit_quantile(r) for r in STATS.itertuples() if r.dtype == "float64"}
    null_rate = {r.column: r.nulls / STUDY_ROWS for r in STATS.itertuples()}
    columns = [c for c in STATS["column"]]
    cat_type = pa.dictionary(pa.int8(), pa.int16())
    fields_pa = [pa.field(c, cat_type if c in ("geomorphons", "clc") else pa.float64()) for c in columns]
    fields_pa += [pa.field("x", pa.float64()), pa.field("y", pa.float64()), pa.field(TARGET, pa.int8())]
    meta = table_metadata(
        grid=grid,
        target=TARGET,
        coords=("x", "y"),
        categorical=["geomorphons", "clc"],
        sampling={"mode": "all", "negative_rate": 1.0},
        generator="tabular.carinthia.write_carinthia_like",
        seed=seed,
        positive_rate=positive_rate,
    )
    schema = pa.schema(fields_pa, metadata=meta)
    block = block_rows or max(1, min(250_000, rows_per_part) // width)
    n_pos = 0
    done = 0
    with (
        atomic_dataset_dir(out) as tmp,
        PartWriter(
            tmp,
            schema,
            rows_per_part=rows_per_part,
            compression="snappy",
            hive=True,
            strict=True,
            row_group_size="batch",
        ) as writer,
    ):
        for r0 in range(0, height, block):
            r1 = min(height, r0 + block)
            n_cells = min((r1 - r0) * width, rows - r0 * width)
            if n_cells <= 0:
                break
            brng = np.random.default_rng([seed, r0])
            cols, y = _block(r0, r1, width, n_cells, fields, fine, quantiles, null_rate, b0, brng)
            xs, ys = grid.cell_centres(*np.divmod(np.arange(r0 * width, r0 * width + n_cells), width))
            arrays = []
            for c in columns:
                v = cols[c]
                if c in ("geomorphons", "clc"):  # v: int8 index into the dictionary, -1 = null
                    levels = GEOMORPHONS if c == "geomorphons" else CLC_CODES
                    arrays.append(
                        pa.DictionaryArray.from_arrays(pa.array(v, pa.int8(), mask=v < 0), pa.array(levels, pa.int16()))
                    )
                else:
                    arrays.append(pa.array(v, pa.float64()))
            arrays += [pa.array(xs), pa.array(ys), pa.array(y, pa.int8())]
            writer.write(pa.RecordBatch.from_arrays(arrays, schema=schema))
            n_pos += int(y.sum())
            done += len(y)
            if progress is not None:
                progress(done, rows)
    return MakeTableResult(str(out), done, n_pos, writer.parts, height, width, time.perf_counter() - t_start)


def _block(
    r0: int,
    r1: int,
    width: int,
    n_cells: int,
    fields: dict[str, tuple[_Field, _Field]],
    fine: _Field,
    quantiles: dict[str, Quantile],
    null_rate: dict[str, float],
    b0: float,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Columns and labels of grid rows ``r0..r1`` (first ``n_cells`` cells in row-major order)."""
    group = {}
    for g, (coarse, medium) in fields.items():
        f = 0.8 * coarse.rows(r0, r1, width) + 0.6 * medium.rows(r0, r1, width)
        group[g] = f.ravel()[:n_cells]
    out: dict[str, np.ndarray] = {}
    latent: dict[str, np.ndarray] = {}
    for col, (g, sign) in GROUPS.items():
        z = 0.8 * sign * group[g] + 0.6 * rng.standard_normal(n_cells, dtype=np.float32)
        latent[col] = z
        out[col] = quantiles[col](ndtr(z).astype(np.float64))
    out["forest_cover"] = np.zeros(n_cells)
    # categorical: geomorphons from curvature (ridges high codes), clc from elevation
    zc = latent["convergence_index"]
    u = ndtr(-zc + 0.5 * rng.standard_normal(n_cells))
    out["geomorphons"] = np.minimum((u * len(GEOMORPHONS)).astype(np.int8), len(GEOMORPHONS) - 1)
    ze = latent["elevation"]
    u = ndtr(0.7 * ze + 0.7 * rng.standard_normal(n_cells))
    out["clc"] = np.minimum((u * len(CLC_CODES)).astype(np.int8), len(CLC_CODES) - 1)
    forest = np.isin(CLC_CODES[out["clc"]], CLC_FOREST)
    f = fine.rows(r0, r1, width).ravel()[:n_cells]
    zs, zp, zw = latent["slope"], latent["prcptot"], latent["twi"]
    logit = b0 + 1.1 * zs + 0.5 * zp + 0.45 * zc + 0.35 * zw + 0.4 * zs * zp - 0.5 * forest + 1.2 * f
    y = (rng.random(n_cells) < expit(logit)).astype(np.int8)
    # missing values at the study's rates; climate and surface-water columns share masks
    climate_mask = rng.random(n_cells) < null_rate["prcptot"]
    water_mask = rng.random(n_cells) < null_rate["sw_max_speed"]
    extra = null_rate["sw_hazard_cat"] - null_rate["sw_max_speed"]
    for col in SHARED_MASKS["climate"]:
        out[col][climate_mask] = np.nan
    for col in WATER_MASK:
        out[col][water_mask] = np.nan
    out["sw_hazard_cat"] = np.round(out["sw_hazard_cat"])
    out["sw_hazard_cat"][water_mask | (rng.random(n_cells) < extra)] = np.nan
    out["aspect_arctan2"][rng.random(n_cells) < null_rate["aspect_arctan2"]] = np.nan
    clc_null = rng.random(n_cells) < null_rate["clc"]
    out["clc"] = np.where(clc_null, -1, out["clc"]).astype(np.int8)
    return out, y
