"""The seed's feature engineering: extra channels computed from the 14 L4S bands.

Follows ../shared/design/rau-net.md section 5 (the RAU-Net code, not the slide deck).
Input: ``(B, 14, H, W)`` or ``(14, H, W)`` L4S bands *as stored* (pre-scaled, cleaned but not
normalised). Output: ``(B, C, H, W)`` float32 (``(C, H, W)`` for a single patch), the same kind
as the input (NumPy -> NumPy via OpenCV on the CPU; torch -> torch on the input's device).

23-channel set (default), channel order:

====  ===========  =====================================================================
idx   name         definition
====  ===========  =====================================================================
0-13  B1..DEM      the L4S bands (:data:`imagery.data.bands.BANDS`)
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

Scaled RGB (the 9-channel set only): ``R_sc`` = clip(B4 * m4 / 6000, 0, 1), ``G_sc`` and ``B_sc`` the same
for B3 and B2, with m the L4S band means (:data:`imagery.data.bands.L4S_BAND_MEANS`): the pre-scaled value back
in raw digital numbers, divided by 6000 (the authors' ``addRGB_2``).

Named channel sets (``CHANNEL_SETS``): 9 = the deck's RGB set: B2, B3, B4 as stored (the authors' BGR
order), R/G/B min-max, R/G/B scaled (3 RGB + 6 normalised RGB); 14 = bands only; 17 = bands + local RGB;
21 = the 23-set without slope/DEM ("Sentinel-only", design note section 5); 22 = the deck's 17 + 1 edge +
2 blur + 2 gradient: the 17-set, Canny, box and median blur, Sobel x/y (in the order the authors'
generator appends them; gray itself is not a channel there, only the blurs' input); 23 = default;
25 = 23 + Sobel x/y; 26 = 23 + Canny + Sobel x/y.

Deck vs code: the deck says "Gaussian and median blur, k = 10"; the code (followed here)
uses a 10x10 box blur and a 15x15 median. The deck orders the indices NDVI, VI, NBR, gray;
the code's order NDVI, NBR, VI, gray is used.

Band subsets (``bands=``, the model's band set, ``train_imagery --bands``): the input then holds only
those bands, in :data:`imagery.data.bands.BANDS` order; :func:`channel_names` keeps the set's band
channels that are present and **leaves out every engineered channel that needs a missing band**
(``Channel.needs``): R_mm/G_mm/B_mm need B4/B3/B2, NDVI needs B8+B4, NBR B8+B12, VI B8+B11, gray and
the blurs, Canny and Sobel need B2+B3+B4. For example B2,B3,B4,B8,B11 with set 23 gives the seed's
13-channel deployment variant (5 bands + R/G/B min-max, NDVI, VI, gray, two blurs).

Canny has no torch implementation here: for channel sets with ``canny`` a torch input is
moved to the CPU for that one channel (OpenCV) and the result moved back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from common.cli import UserError
from imagery.data.bands import BANDS, L4S_BAND_MEANS, band_index, canonical_bands, is_temporal_band_set

EPS = 1e-8
SOBEL_SCALE = 27.32
CANNY_LOW, CANNY_HIGH = 150, 227
BOX_K = 10
MEDIAN_K = 15
SOBEL_K = 5
#: The authors' scaled RGB: raw digital number (pre-scaled value x band mean) / 6000, clipped to [0, 1].
RGB_SCALE_DN = 6000.0


# --------------------------------------------------------------------------- shared intermediates


def _is_torch(a: Any) -> bool:
    return isinstance(a, torch.Tensor)


def _minmax(a: Any) -> Any:
    """Per-image min-max over the last two axes of ``(B, H, W)`` (NumPy or torch)."""
    if _is_torch(a):
        lo, hi = a.amin(dim=(-2, -1), keepdim=True), a.amax(dim=(-2, -1), keepdim=True)
    else:
        lo, hi = a.min(axis=(-2, -1), keepdims=True), a.max(axis=(-2, -1), keepdims=True)
    return (a - lo) / (hi - lo + EPS)


def _scaled_rgb(name: str) -> Callable[[_Batch], Any]:
    """``clip(band * L4S mean / 6000, 0, 1)`` (NumPy or torch)."""
    factor = float(L4S_BAND_MEANS[band_index(name)]) / RGB_SCALE_DN

    def run(b: _Batch) -> Any:
        v = b.band(name) * factor
        return v.clamp(0.0, 1.0) if b.torch else np.clip(v, 0.0, 1.0)

    return run


def _ratio(a: Any, b: Any) -> Any:
    """Normalised difference ``(a - b) / max(a + b, EPS)`` (NumPy or torch)."""
    den = (a + b).clamp(min=EPS) if _is_torch(a) else np.maximum(a + b, EPS)
    return (a - b) / den


class _Batch:
    """One batch ``(B, len(bands), H, W)`` and the intermediates several channels share, each computed once.

    NumPy computes in float64 (the OpenCV path): each band an engineered channel needs is converted once, on
    first use; the band channels themselves are the stored values (no float64 round trip: the same float32).
    Torch batches are float32 on their device. ``gray_u8`` holds the uint8 gray of the seed (``uint8`` for
    NumPy, uint8 values as float for torch).
    """

    def __init__(self, x: Any, bands: tuple[str, ...] = BANDS) -> None:
        self.torch = _is_torch(x)
        self.x = x.float() if self.torch else x
        self.pos = {b: i for i, b in enumerate(bands)}
        self._f64: dict[str, np.ndarray] = {}

    def raw(self, name: str) -> Any:
        """Band ``name`` as stored ``(B, H, W)``."""
        return self.x[:, self.pos[name]]

    def band(self, name: str) -> Any:
        """Band ``name`` ``(B, H, W)`` to compute with: float64 for NumPy, float32 for torch."""
        if self.torch:
            return self.raw(name)
        if name not in self._f64:
            self._f64[name] = self.raw(name).astype(np.float64)
        return self._f64[name]

    @cached_property
    def gray(self) -> Any:
        return (self.band("B2") + self.band("B3") + self.band("B4")) / 3.0

    @cached_property
    def gray_mm(self) -> Any:
        return _minmax(self.gray)

    @cached_property
    def gray_u8(self) -> Any:
        if self.torch:
            return torch.floor(self.gray_mm * 255.0).clamp(0, 255)
        return np.floor(self.gray_mm * 255.0).clip(0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- filters (two backends)


def _blur_box_np(b: _Batch) -> np.ndarray:
    return np.stack([cv2.blur(g, (BOX_K, BOX_K)) for g in b.gray_u8.astype(np.float32)]) / 255.0


def _blur_box_torch(b: _Batch) -> Any:
    # OpenCV's anchor for an even kernel is k//2: the window spans -5..+4 around the pixel.
    lo, hi = BOX_K // 2, BOX_K - 1 - BOX_K // 2
    padded = F.pad(b.gray_u8.unsqueeze(1), (lo, hi, lo, hi), mode="reflect")
    return F.avg_pool2d(padded, BOX_K, stride=1).squeeze(1) / 255.0


def _median_np(b: _Batch) -> np.ndarray:
    return np.stack([cv2.medianBlur(g, MEDIAN_K) for g in b.gray_u8]).astype(np.float64) / 255.0


def _median_torch(b: _Batch) -> Any:
    return median_filter_torch(b.gray_u8, MEDIAN_K) / 255.0


def _canny_np(b: _Batch) -> np.ndarray:
    return np.stack([cv2.Canny(g, CANNY_LOW, CANNY_HIGH) for g in b.gray_u8]).astype(np.float64) / 255.0


def _canny_torch(b: _Batch) -> Any:
    """OpenCV Canny on the CPU, moved back to the batch's device (no torch implementation)."""
    u8 = b.gray_u8.to("cpu", torch.uint8).numpy()
    edges = np.stack([cv2.Canny(g, CANNY_LOW, CANNY_HIGH) for g in u8]).astype(np.float32) / 255.0
    return torch.from_numpy(edges).to(b.x.device)


def _sobel_np(dx: int, dy: int) -> Callable[[_Batch], np.ndarray]:
    def run(b: _Batch) -> np.ndarray:
        g32 = b.gray_mm.astype(np.float32)
        return np.stack([cv2.Sobel(g, cv2.CV_32F, dx, dy, ksize=SOBEL_K) for g in g32]) / SOBEL_SCALE

    return run


def _sobel_kernels() -> tuple[np.ndarray, np.ndarray]:
    """5x5 Sobel kernels as OpenCV builds them (correlation form): d/dx and d/dy."""
    smooth = np.array([1.0, 4.0, 6.0, 4.0, 1.0])
    deriv = np.array([-1.0, -2.0, 0.0, 2.0, 1.0])
    return np.outer(smooth, deriv), np.outer(deriv, smooth)


def _sobel_torch(axis: str) -> Callable[[_Batch], Any]:
    def run(b: _Batch) -> Any:
        kx, ky = _sobel_kernels()
        kern = torch.as_tensor(kx if axis == "x" else ky, dtype=torch.float32, device=b.x.device)[None, None]
        padded = F.pad(b.gray_mm.unsqueeze(1), (2, 2, 2, 2), mode="reflect")
        return F.conv2d(padded, kern).squeeze(1) / SOBEL_SCALE

    return run


def median_filter_torch(x: Any, k: int = MEDIAN_K, chunk: int = 8) -> Any:
    """Median filter with replicate border on ``(B, H, W)`` (any dtype), vectorised in chunks of images."""
    r = k // 2
    outs = []
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].float().unsqueeze(1)
        padded = F.pad(part, (r, r, r, r), mode="replicate").squeeze(1)
        win = padded.unfold(1, k, 1).unfold(2, k, 1)  # (b, H, W, k, k) view
        win = win.reshape(*win.shape[:3], k * k)
        outs.append(win.median(dim=-1).values)
    return torch.cat(outs, dim=0)


# --------------------------------------------------------------------------- the channel table


@dataclass(frozen=True)
class Channel:
    """One input channel: ``numpy(batch)`` computes it; ``torch(batch)`` where the torch backend needs
    its own code (filters), else ``numpy`` is backend-neutral and serves both."""

    name: str
    numpy: Callable[[_Batch], Any]
    torch: Callable[[_Batch], Any] | None = None
    #: the bands this channel is computed from (it is left out of a band set that lacks one of them)
    needs: tuple[str, ...] = ()

    def compute(self, batch: _Batch) -> Any:
        fn = self.torch if (batch.torch and self.torch is not None) else self.numpy
        return fn(batch)


def _band(name: str) -> Callable[[_Batch], Any]:
    return lambda b: b.raw(name)


_RGB = ("B2", "B3", "B4")

#: Every channel this module can compute, in no particular order (the sets below give the order).
CHANNELS: dict[str, Channel] = {
    c.name: c
    for c in (
        *(Channel(name, _band(name), needs=(name,)) for name in BANDS),
        Channel("R_mm", lambda b: _minmax(b.band("B4")), needs=("B4",)),
        Channel("G_mm", lambda b: _minmax(b.band("B3")), needs=("B3",)),
        Channel("B_mm", lambda b: _minmax(b.band("B2")), needs=("B2",)),
        Channel("R_sc", _scaled_rgb("B4"), needs=("B4",)),
        Channel("G_sc", _scaled_rgb("B3"), needs=("B3",)),
        Channel("B_sc", _scaled_rgb("B2"), needs=("B2",)),
        Channel("NDVI", lambda b: _ratio(b.band("B8"), b.band("B4")), needs=("B8", "B4")),
        Channel("NBR", lambda b: _ratio(b.band("B8"), b.band("B12")), needs=("B8", "B12")),
        Channel("VI", lambda b: _ratio(b.band("B8"), b.band("B11")), needs=("B8", "B11")),
        Channel("gray", lambda b: b.gray, needs=_RGB),
        Channel("blur_box", _blur_box_np, _blur_box_torch, needs=_RGB),
        Channel("blur_median", _median_np, _median_torch, needs=_RGB),
        Channel("canny", _canny_np, _canny_torch, needs=_RGB),
        Channel("sobel_x", _sobel_np(1, 0), _sobel_torch("x"), needs=_RGB),
        Channel("sobel_y", _sobel_np(0, 1), _sobel_torch("y"), needs=_RGB),
    )
}

_BASE23: tuple[str, ...] = (*BANDS, "R_mm", "G_mm", "B_mm", "NDVI", "NBR", "VI", "gray", "blur_box", "blur_median")
_BASE17: tuple[str, ...] = (*BANDS, "R_mm", "G_mm", "B_mm")
CHANNEL_SETS: dict[int, tuple[str, ...]] = {
    9: ("B2", "B3", "B4", "R_mm", "G_mm", "B_mm", "R_sc", "G_sc", "B_sc"),
    14: BANDS,
    17: _BASE17,
    21: tuple(c for c in _BASE23 if c not in ("slope", "DEM")),
    22: (*_BASE17, "canny", "blur_box", "blur_median", "sobel_x", "sobel_y"),
    23: _BASE23,
    25: (*_BASE23, "sobel_x", "sobel_y"),
    26: (*_BASE23, "canny", "sobel_x", "sobel_y"),
}
DEFAULT_CHANNEL_SET = 23


def n_channels(channel_set: int = DEFAULT_CHANNEL_SET, bands: tuple[str, ...] | list[str] | None = None) -> int:
    """Number of channels of a named channel set (on the band set ``bands``, default all 14)."""
    return len(channel_names(channel_set, bands))


def channel_names(
    channel_set: int = DEFAULT_CHANNEL_SET, bands: tuple[str, ...] | list[str] | None = None
) -> tuple[str, ...]:
    """Channel names of ``channel_set`` computed from ``bands`` (default: the 14 L4S bands).

    Band channels outside ``bands`` and engineered channels needing a missing band are left out (module
    docstring). :class:`common.cli.UserError` for an unknown set or a band set leaving no channel.
    """
    if channel_set not in CHANNEL_SETS:
        raise UserError(f"unknown channel set {channel_set!r}; expected one of {sorted(CHANNEL_SETS)}")
    names = CHANNEL_SETS[channel_set]
    if bands is None:
        return names
    if is_temporal_band_set(bands):  # temporal channels (imagery.data.sen12_temporal) are the model's input as is
        return tuple(bands)
    have = set(canonical_bands(bands))
    out = tuple(n for n in names if set(CHANNELS[n].needs) <= have)
    if not out:
        raise UserError(f"channel set {channel_set} has no channel computable from bands {', '.join(bands)}")
    return out


def compute_features(x: Any, channel_set: int = DEFAULT_CHANNEL_SET, bands: tuple[str, ...] | None = None) -> Any:
    """Engineered channels of ``x`` for ``channel_set`` (see the module docstring).

    Args:
        x: NumPy array or torch tensor ``(B, len(bands), H, W)`` or ``(len(bands), H, W)``, L4S bands as
            stored (clean NaN/Inf first with :func:`imagery.transforms.normalize.clean_image`).
        channel_set: a key of :data:`CHANNEL_SETS` (default 23).
        bands: the bands ``x`` holds, in :data:`imagery.data.bands.BANDS` order (default all 14).

    Returns:
        Same kind as ``x``: ``(B, C, H, W)`` float32 (``(C, H, W)`` for a 3-D input); a torch
        result lives on ``x``'s device.
    """
    if is_temporal_band_set(bands):  # temporal channels: taken as they are
        return x.float() if _is_torch(x) else np.asarray(x, dtype=np.float32)
    band_set = BANDS if bands is None else canonical_bands(bands)
    names = channel_names(channel_set, None if bands is None else band_set)
    is_torch = _is_torch(x)
    if not is_torch:
        x = np.asarray(x)
    single = x.ndim == 3
    if x.ndim not in (3, 4):
        nb = len(band_set)
        raise ValueError(f"features input must be (B, {nb}, H, W) or ({nb}, H, W), got shape {tuple(x.shape)}")
    if single:
        x = x[None]
    if x.shape[1] != len(band_set):
        raise ValueError(f"features input has {x.shape[1]} channels, expected {len(band_set)} bands {band_set}")
    batch = _Batch(x, band_set)
    if is_torch:
        out = torch.stack([CHANNELS[n].compute(batch) for n in names], dim=1).float()
    else:  # each float64 plane rounded into the float32 result: the values of stack-then-cast, without the copies
        out = np.empty((x.shape[0], len(names), *x.shape[2:]), dtype=np.float32)
        for i, n in enumerate(names):
            out[:, i] = CHANNELS[n].compute(batch)
    return out[0] if single else out
