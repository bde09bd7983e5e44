"""Built-in synthetic Landslide4Sense-like patches (the project's own generator).

Each patch is built from physical pieces, then scaled to L4S's pre-scaled units:

* terrain: a fractal DEM (spectral synthesis, power ~ 1/f^beta) in metres; slope in degrees
  from its gradient at 10 m pixels; both divided by the seed's band means
  (:data:`imagery.data.bands.L4S_BAND_MEANS`) like L4S does;
* land cover: vegetation and bare soil mixed by a smooth fractal field (more bare soil
  on steep slopes), water in the lowest valley cells, per-patch illumination gain and
  ~4% multiplicative pixel noise; spectra per class over B1..B12 in pre-scaled units,
  chosen so that per-band means/stds match the real patches in ../shared/data
  (see tests/imagery/test_data_real.py for the tolerance rule);
* landslide scars: elongated elliptical blobs with ragged edges, centred by sampling
  pixels with probability ~ slope^6 and oriented along the local gradient, painted with
  a bright bare-soil spectrum (so NDVI drops inside scars, as in real L4S); positive
  patches have 1-5% landslide pixels;
* clouds: optional bright smooth blobs (strong in B10 cirrus) blended over everything,
  which can hide scars from view; the mask still labels the scar (ground truth).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from imagery.data.bands import L4S_BAND_MEANS, N_BANDS
from imagery.data.l4s import write_image, write_mask

#: Class spectra over B1..B12 in L4S pre-scaled units (band value / band mean).
SPECTRA: dict[str, np.ndarray] = {
    "vegetation": np.array([0.86, 0.83, 0.88, 0.72, 1.00, 1.22, 1.20, 1.22, 1.35, 1.30, 0.95, 0.80]),
    "soil": np.array([0.95, 1.05, 1.20, 1.50, 1.35, 1.02, 0.95, 0.95, 1.40, 1.45, 1.40, 1.55]),
    "scar": np.array([1.05, 1.25, 1.45, 1.95, 1.60, 1.05, 0.95, 0.95, 1.45, 1.50, 1.75, 2.10]),
    "water": np.array([0.80, 0.75, 0.70, 0.55, 0.45, 0.30, 0.25, 0.22, 0.40, 1.10, 0.15, 0.12]),
    "cloud": np.array([1.70, 2.30, 2.70, 3.30, 2.70, 1.90, 1.80, 1.85, 2.20, 9.00, 2.30, 2.60]),
}
PIXEL_M = 10.0  # ground sampling distance, metres


def fractal_field(rng: np.random.Generator, size: int, beta: float = 3.0) -> np.ndarray:
    """``(size, size)`` float64 fractal noise with power spectrum ~ 1/f^beta, scaled to [0, 1]."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0)
    amp[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, amp.shape)
    field = np.fft.irfft2(amp * np.exp(1j * phase) * rng.rayleigh(1.0, amp.shape), s=(size, size))
    lo, hi = field.min(), field.max()
    return (field - lo) / max(hi - lo, 1e-12)


def _terrain(rng: np.random.Generator, size: int, steepness: float) -> tuple[np.ndarray, np.ndarray]:
    """DEM (metres) and slope (degrees), both ``(size, size)``."""
    relief = rng.uniform(120.0, 400.0) * steepness
    base = rng.uniform(100.0, 3000.0)
    dem = base + relief * fractal_field(rng, size, beta=rng.uniform(3.2, 4.0))
    gy, gx = np.gradient(dem, PIXEL_M)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    return dem, slope


def _scar_mask(
    rng: np.random.Generator, slope: np.ndarray, dem: np.ndarray, n_scars: int, target_fraction: float
) -> np.ndarray:
    size = slope.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    gy, gx = np.gradient(dem)
    p = (slope.ravel() / max(float(slope.max()), 1e-6)) ** 6 + 1e-9
    p /= p.sum()
    mask = np.zeros((size, size), dtype=bool)
    area_each = target_fraction * size * size / n_scars
    ragged = fractal_field(rng, size, beta=2.0)
    for _ in range(n_scars):
        c = rng.choice(size * size, p=p)
        cy, cx = divmod(int(c), size)
        aspect = rng.uniform(1.5, 4.0)
        area = area_each * rng.uniform(0.6, 1.4)
        b = np.sqrt(area / (np.pi * aspect))
        a = aspect * b
        theta = np.arctan2(gy[cy, cx], gx[cy, cx]) + rng.normal(0, 0.3)  # long axis along the fall line
        dx, dy = xx - cx, yy - cy
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        r = (u / a) ** 2 + (v / b) ** 2
        mask |= r < 1.0 + 0.6 * (ragged - 0.5)
    return mask


def synth_patch(
    rng: np.random.Generator,
    *,
    has_landslide: bool,
    size: int = 128,
    cloud_fraction: float | None = None,
    n_scars: int | None = None,
    steepness: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic patch: ``(image (14, size, size) float32, mask (size, size) uint8 0/1)``.

    Args:
        rng: the random generator (all randomness comes from it).
        has_landslide: whether to paint landslide scars (mask all zeros otherwise).
        size: patch side in pixels (L4S: 128).
        cloud_fraction: fraction of the patch under cloud in [0, 1]; ``None`` draws it
            (70% of patches cloud-free, else U(0.05, 0.35)).
        n_scars: number of scars for a positive patch; ``None`` draws 1-3.
        steepness: multiplies the DEM relief (1.0 typical); ``None`` draws U(0.6, 1.6).

    Bands follow :data:`imagery.data.bands.BANDS`, in L4S pre-scaled units.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    if cloud_fraction is not None and not 0.0 <= cloud_fraction <= 1.0:
        raise ValueError(f"cloud_fraction must be in [0, 1], got {cloud_fraction}")
    steep = float(rng.uniform(0.6, 1.6)) if steepness is None else float(steepness)
    if steep <= 0:
        raise ValueError(f"steepness must be > 0, got {steepness}")
    dem, slope = _terrain(rng, size, steep)

    # land cover: vegetation abundance from a smooth field, reduced on steep slopes
    veg_field = fractal_field(rng, size, beta=rng.uniform(2.4, 3.4))
    veg_level = rng.uniform(0.3, 0.75)
    veg = 1.0 / (1.0 + np.exp(-12.0 * (veg_field - (1.0 - veg_level)) + 0.04 * (slope - 25.0)))
    spectra = veg[None] * SPECTRA["vegetation"][:, None, None] + (1 - veg[None]) * SPECTRA["soil"][:, None, None]
    if rng.random() < 0.3:  # a river / lake in the lowest cells
        water = dem < np.quantile(dem, rng.uniform(0.02, 0.08))
        spectra[:, water] = SPECTRA["water"][:, None]

    mask = np.zeros((size, size), dtype=bool)
    if has_landslide:
        k = int(rng.integers(1, 4)) if n_scars is None else int(n_scars)
        if k < 1:
            raise ValueError(f"n_scars must be >= 1 for a landslide patch, got {n_scars}")
        mask = _scar_mask(rng, slope, dem, k, target_fraction=rng.uniform(0.01, 0.05))
        scar = SPECTRA["scar"] * rng.uniform(0.9, 1.15)
        spectra[:, mask] = scar[:, None]

    gain = rng.uniform(0.8, 1.1) * rng.uniform(0.95, 1.05, size=12)
    s2 = spectra * gain[:, None, None] * rng.normal(1.0, 0.03, spectra.shape)
    # gentle smooth brightness variation (haze / illumination)
    s2 *= 1.0 + 0.15 * (fractal_field(rng, size, beta=3.0)[None] - 0.5)

    cf = (0.0 if rng.random() < 0.7 else rng.uniform(0.05, 0.35)) if cloud_fraction is None else cloud_fraction
    if cf > 0:
        cfield = fractal_field(rng, size, beta=3.0)
        thr = np.quantile(cfield, 1.0 - cf)
        alpha = np.clip((cfield - thr) / 0.05 + 0.5, 0.0, 1.0) if cf < 1 else np.ones_like(cfield)
        cloud = SPECTRA["cloud"][:, None, None] * rng.uniform(0.85, 1.15)
        s2 = (1 - alpha[None]) * s2 + alpha[None] * cloud * rng.normal(1.0, 0.03, s2.shape)

    image = np.empty((N_BANDS, size, size), dtype=np.float64)
    image[:12] = np.clip(s2, 0.0, None)
    image[12] = slope / float(L4S_BAND_MEANS[12])
    image[13] = dem / float(L4S_BAND_MEANS[13])
    return image.astype(np.float32), mask.astype(np.uint8)


def write_synthetic_l4s(
    out_dir: str | os.PathLike[str],
    n_patches: int = 64,
    seed: int = 0,
    size: int = 128,
    positive_fraction: float = 0.6,
    dtype: np.dtype | type = np.float32,
) -> Path:
    """Write ``n_patches`` synthetic patches in the plain L4S layout and return ``out_dir``.

    Files: ``out_dir/img/image_N.h5`` (dataset ``img``, ``(size, size, 14)`` in ``dtype``;
    pass ``np.float64`` to mimic the release) and ``out_dir/mask/mask_N.h5`` (uint8), N = 1..n.
    Exactly ``round(positive_fraction * n_patches)`` patches contain landslides, in random order.
    """
    if n_patches < 1:
        raise ValueError(f"n_patches must be >= 1, got {n_patches}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    n_pos = int(round(positive_fraction * n_patches))
    labels = np.zeros(n_patches, dtype=bool)
    labels[rng.permutation(n_patches)[:n_pos]] = True
    for i in range(n_patches):
        img, mask = synth_patch(rng, has_landslide=bool(labels[i]), size=size)
        write_image(out / "img" / f"image_{i + 1}.h5", img, dtype=dtype)
        write_mask(out / "mask" / f"mask_{i + 1}.h5", mask)
    return out
