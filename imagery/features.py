"""The seed's feature engineering: extra channels computed from the 14 L4S bands.

Follows ../shared/design/rau-net.md section 5 (the RAU-Net code, not the slide deck).
Input: ``(B, 14, H, W)`` or ``(14, H, W)`` L4S bands *as stored* (pre-scaled, cleaned but not
normalised). Output: ``(B, C, H, W)`` float32 (``(C, H, W)`` for a single patch), the same kind
as the input (NumPy -> NumPy via OpenCV on the CPU; torch -> torch on the input's device).

23-channel set (default), channel order:

====  ===========  =====================================================================
idx   name         definition
====  ===========  =====================================================================
0-13  B1..DEM      the L4S bands (:data:`imagery.bands.BANDS`)
14    R_mm         (B4 - min) / (max - min + 1e-8), min/max over the patch
15    G_mm         same for B3
16    B_mm         same for B2
17    NDVI         (B8 - B4) / max(B8 + B4, 1e-8)
18    NBR          (B8 - B12) / max(B8 + B12, 1e-8)
19    VI           (B8 - B11) / max(B8 + B11, 1e-8)
20    gray         (B2 + B3 + B4) / 3
21    blur_box     gray -> patch min-max -> x255 -> uint8 (truncated) -> 10x10 box mean
                   (border reflect-101, OpenCV anchor: window rows/cols -5..+4) -> /255
22    blur_median  same uint8 gray -> 15x15 median (border replicate) -> /255
====  ===========  =====================================================================

Extra channels: ``canny`` = OpenCV Canny (thresholds 150/227) on the uint8 gray, as 0/1;
``sobel_x``/``sobel_y`` = 5x5 Sobel (border reflect-101) on the min-max gray in [0, 1], divided
by 27.32 (the seed's constant).

Named channel sets (``CHANNEL_SETS``): 14 = bands only; 17 = bands + local RGB; 21 = the
23-set without slope/DEM ("Sentinel-only", design note section 5); 23 = default; 25 = 23 +
Sobel x/y; 26 = 23 + Canny + Sobel x/y.

Deck vs code: the deck says "Gaussian and median blur, k = 10"; the code (followed here)
uses a 10x10 box blur and a 15x15 median. The deck orders the indices NDVI, VI, NBR, gray;
the code's order NDVI, NBR, VI, gray is used.

Canny has no torch implementation here: for channel sets with ``canny`` a torch input is
moved to the CPU for that one channel (OpenCV) and the result moved back.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from imagery.bands import BANDS, band_index

EPS = 1e-8
SOBEL_SCALE = 27.32
CANNY_LOW, CANNY_HIGH = 150, 227
BOX_K = 10
MEDIAN_K = 15
SOBEL_K = 5

_BASE23: tuple[str, ...] = (*BANDS, "R_mm", "G_mm", "B_mm", "NDVI", "NBR", "VI", "gray", "blur_box", "blur_median")
CHANNEL_SETS: dict[int, tuple[str, ...]] = {
    14: BANDS,
    17: (*BANDS, "R_mm", "G_mm", "B_mm"),
    21: tuple(c for c in _BASE23 if c not in ("slope", "DEM")),
    23: _BASE23,
    25: (*_BASE23, "sobel_x", "sobel_y"),
    26: (*_BASE23, "canny", "sobel_x", "sobel_y"),
}
DEFAULT_CHANNEL_SET = 23

_I = {name: band_index(name) for name in ("B2", "B3", "B4", "B8", "B11", "B12")}


def n_channels(channel_set: int = DEFAULT_CHANNEL_SET) -> int:
    """Number of channels of a named channel set."""
    return len(channel_names(channel_set))


def channel_names(channel_set: int = DEFAULT_CHANNEL_SET) -> tuple[str, ...]:
    """Channel names of ``channel_set``; ``ValueError`` for an unknown set."""
    if channel_set not in CHANNEL_SETS:
        raise ValueError(f"unknown channel set {channel_set!r}; expected one of {sorted(CHANNEL_SETS)}")
    return CHANNEL_SETS[channel_set]


# --------------------------------------------------------------------------- NumPy / OpenCV path


def _minmax_np(a: np.ndarray) -> np.ndarray:
    """Per-image min-max over the last two axes of ``(B, H, W)``."""
    lo = a.min(axis=(-2, -1), keepdims=True)
    hi = a.max(axis=(-2, -1), keepdims=True)
    return (a - lo) / (hi - lo + EPS)


def _ratio_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b) / np.maximum(a + b, EPS)


def _features_np(x: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    xb = x.astype(np.float64, copy=False)
    out: dict[str, np.ndarray] = {}
    red, green, blue = xb[:, _I["B4"]], xb[:, _I["B3"]], xb[:, _I["B2"]]
    nir = xb[:, _I["B8"]]
    gray = (blue + green + red) / 3.0
    gray_mm = _minmax_np(gray)
    gray_u8 = np.floor(gray_mm * 255.0).clip(0, 255).astype(np.uint8)
    for name in names:
        if name in BANDS:
            out[name] = xb[:, band_index(name)]
        elif name == "R_mm":
            out[name] = _minmax_np(red)
        elif name == "G_mm":
            out[name] = _minmax_np(green)
        elif name == "B_mm":
            out[name] = _minmax_np(blue)
        elif name == "NDVI":
            out[name] = _ratio_np(nir, red)
        elif name == "NBR":
            out[name] = _ratio_np(nir, xb[:, _I["B12"]])
        elif name == "VI":
            out[name] = _ratio_np(nir, xb[:, _I["B11"]])
        elif name == "gray":
            out[name] = gray
        elif name == "blur_box":
            out[name] = np.stack([cv2.blur(g, (BOX_K, BOX_K)) for g in gray_u8.astype(np.float32)]) / 255.0
        elif name == "blur_median":
            out[name] = np.stack([cv2.medianBlur(g, MEDIAN_K) for g in gray_u8]).astype(np.float64) / 255.0
        elif name == "canny":
            out[name] = np.stack([cv2.Canny(g, CANNY_LOW, CANNY_HIGH) for g in gray_u8]).astype(np.float64) / 255.0
        elif name == "sobel_x":
            g32 = gray_mm.astype(np.float32)
            out[name] = np.stack([cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=SOBEL_K) for g in g32]) / SOBEL_SCALE
        elif name == "sobel_y":
            g32 = gray_mm.astype(np.float32)
            out[name] = np.stack([cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=SOBEL_K) for g in g32]) / SOBEL_SCALE
        else:  # pragma: no cover - CHANNEL_SETS only holds known names
            raise ValueError(f"unknown feature channel {name!r}")
    return np.stack([out[n] for n in names], axis=1).astype(np.float32)


# --------------------------------------------------------------------------- torch path


def _sobel_kernels() -> tuple[np.ndarray, np.ndarray]:
    """5x5 Sobel kernels as OpenCV builds them (correlation form): d/dx and d/dy."""
    smooth = np.array([1.0, 4.0, 6.0, 4.0, 1.0])
    deriv = np.array([-1.0, -2.0, 0.0, 2.0, 1.0])
    return np.outer(smooth, deriv), np.outer(deriv, smooth)


def median_filter_torch(x: Any, k: int = MEDIAN_K, chunk: int = 8) -> Any:
    """Median filter with replicate border on ``(B, H, W)`` (any dtype), vectorised in chunks of images."""
    import torch
    import torch.nn.functional as F

    r = k // 2
    outs = []
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].float().unsqueeze(1)
        padded = F.pad(part, (r, r, r, r), mode="replicate").squeeze(1)
        win = padded.unfold(1, k, 1).unfold(2, k, 1)  # (b, H, W, k, k) view
        win = win.reshape(*win.shape[:3], k * k)
        outs.append(win.median(dim=-1).values)
    return torch.cat(outs, dim=0)


def _features_torch(x: Any, names: tuple[str, ...]) -> Any:
    import torch
    import torch.nn.functional as F

    xf = x.float()
    dev = xf.device

    def minmax(a: torch.Tensor) -> torch.Tensor:
        lo = a.amin(dim=(-2, -1), keepdim=True)
        hi = a.amax(dim=(-2, -1), keepdim=True)
        return (a - lo) / (hi - lo + EPS)

    def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b) / torch.clamp(a + b, min=EPS)

    red, green, blue = xf[:, _I["B4"]], xf[:, _I["B3"]], xf[:, _I["B2"]]
    nir = xf[:, _I["B8"]]
    gray = (blue + green + red) / 3.0
    gray_mm = minmax(gray)
    gray_u8 = torch.floor(gray_mm * 255.0).clamp(0, 255)  # uint8 values held as float
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name in BANDS:
            out[name] = xf[:, band_index(name)]
        elif name == "R_mm":
            out[name] = minmax(red)
        elif name == "G_mm":
            out[name] = minmax(green)
        elif name == "B_mm":
            out[name] = minmax(blue)
        elif name == "NDVI":
            out[name] = ratio(nir, red)
        elif name == "NBR":
            out[name] = ratio(nir, xf[:, _I["B12"]])
        elif name == "VI":
            out[name] = ratio(nir, xf[:, _I["B11"]])
        elif name == "gray":
            out[name] = gray
        elif name == "blur_box":
            # OpenCV anchor for an even kernel is k//2: the window spans -5..+4 around the pixel.
            lo, hi = BOX_K // 2, BOX_K - 1 - BOX_K // 2
            padded = F.pad(gray_u8.unsqueeze(1), (lo, hi, lo, hi), mode="reflect")
            out[name] = F.avg_pool2d(padded, BOX_K, stride=1).squeeze(1) / 255.0
        elif name == "blur_median":
            out[name] = median_filter_torch(gray_u8, MEDIAN_K) / 255.0
        elif name == "canny":
            u8 = gray_u8.to("cpu", torch.uint8).numpy()
            edges = np.stack([cv2.Canny(g, CANNY_LOW, CANNY_HIGH) for g in u8]).astype(np.float32) / 255.0
            out[name] = torch.from_numpy(edges).to(dev)
        elif name in ("sobel_x", "sobel_y"):
            kx, ky = _sobel_kernels()
            kern = torch.as_tensor(kx if name == "sobel_x" else ky, dtype=torch.float32, device=dev)[None, None]
            padded = F.pad(gray_mm.unsqueeze(1), (2, 2, 2, 2), mode="reflect")
            out[name] = F.conv2d(padded, kern).squeeze(1) / SOBEL_SCALE
        else:  # pragma: no cover
            raise ValueError(f"unknown feature channel {name!r}")
    return torch.stack([out[n] for n in names], dim=1).float()


# --------------------------------------------------------------------------- public


def compute_features(x: Any, channel_set: int = DEFAULT_CHANNEL_SET) -> Any:
    """Engineered channels of ``x`` for ``channel_set`` (see the module docstring).

    Args:
        x: NumPy array or torch tensor ``(B, 14, H, W)`` or ``(14, H, W)``, L4S bands as
            stored (clean NaN/Inf first with :func:`imagery.normalize.clean_image`).
        channel_set: a key of :data:`CHANNEL_SETS` (default 23).

    Returns:
        Same kind as ``x``: ``(B, C, H, W)`` float32 (``(C, H, W)`` for a 3-D input); a torch
        result lives on ``x``'s device.
    """
    names = channel_names(channel_set)
    is_torch = type(x).__module__.startswith("torch")
    if not is_torch:
        x = np.asarray(x)
    if x.ndim == 3:
        single = True
        x = x[None]
    elif x.ndim == 4:
        single = False
    else:
        raise ValueError(f"features input must be (B, 14, H, W) or (14, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != len(BANDS):
        raise ValueError(f"features input has {x.shape[1]} channels, expected {len(BANDS)} L4S bands")
    out = _features_torch(x, names) if is_torch else _features_np(x, names)
    return out[0] if single else out
