"""Cleaning and normalisation of L4S patches; the statistics travel with the model as JSON.

Cleaning rule (:func:`clean_image`, applied to the 14 L4S bands as stored):

1. NaN and +/-Inf are replaced by the median of the finite values of the same band in the
   same patch (0 when a band has none) and counted.
2. Each band is clipped to ``[0, L4S_CLIP_MAX[band]]`` (:data:`imagery.data.bands.L4S_CLIP_MAX`,
   about 2x the largest 99.9th percentile of the real patches in ../shared/data). Pre-scaled
   L4S values are never negative; the cirrus band B10 spike of ~50 seen in real unlabelled
   patches is clipped to 20, while ordinary cloud values (up to ~13) pass unchanged.

Normalisation modes (:class:`Normalizer`):

* ``none``: values as stored (the seed: L4S files are already "divided by band mean");
* ``l4s``: ``(x - L4S_MEAN) / L4S_STD`` on the 14 bands (official L4S baseline statistics);
  extra feature channels pass unchanged;
* ``fold``: per-channel z-score with mean/std fitted on the training split (any C);
* ``band_mean``: ``x / mean`` with per-channel means fitted on the training split (the deck's
  "each band is divided by its mean"; on as-stored L4S files the means are ~1, so this mode
  matters for raw-unit data, e.g. ``x * L4S_BAND_MEANS``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch

from imagery.data.bands import BANDS, L4S_CLIP_MAX, L4S_MEAN, L4S_STD, band_indices

NormalizeMode = Literal["none", "l4s", "fold", "band_mean"]
MODES: tuple[str, ...] = get_args(NormalizeMode)
STD_FLOOR = 1e-6


def clean_image(x: np.ndarray, clip: bool = True, bands: tuple[str, ...] | list[str] = BANDS) -> tuple[np.ndarray, int]:
    """Replace NaN/Inf and clip outliers (rule in the module docstring).

    Args:
        x: ``(C, H, W)`` or ``(N, C, H, W)`` L4S bands (any float dtype), the C = ``len(bands)`` bands ``bands``.
        clip: apply the per-band clipping (step 2).
        bands: the bands ``x`` holds (default all 14, in L4S order).

    Returns:
        ``(cleaned float32 array of the same shape, number of non-finite values replaced)``.
    """
    arr = np.array(x, dtype=np.float32, copy=True)
    single = arr.ndim == 3
    if single:
        arr = arr[None]
    idx = band_indices(list(bands))
    if arr.ndim != 4 or arr.shape[1] != len(idx):
        raise ValueError(f"clean_image expects ({len(idx)}, H, W) or (N, {len(idx)}, H, W), got shape {np.shape(x)}")
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if n_bad:
        for i, b in zip(*np.nonzero(bad.any(axis=(2, 3))), strict=True):
            band = arr[i, b]
            finite = band[np.isfinite(band)]
            band[~np.isfinite(band)] = float(np.median(finite)) if finite.size else 0.0
    if clip:
        np.clip(arr, 0.0, L4S_CLIP_MAX[idx][None, :, None, None], out=arr)
    return (arr[0] if single else arr), n_bad


def _channel_stats(images: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``(N, C, H, W)`` (float64 accumulation, chunked for memmaps)."""
    n, c = images.shape[:2]
    s = np.zeros(c)
    s2 = np.zeros(c)
    count = 0
    for start in range(0, n, chunk):
        part = np.asarray(images[start : start + chunk], dtype=np.float64)
        s += part.sum(axis=(0, 2, 3))
        s2 += (part**2).sum(axis=(0, 2, 3))
        count += part.shape[0] * part.shape[2] * part.shape[3]
    mean = s / count
    var = np.maximum(s2 / count - mean**2, 0.0)
    return mean, np.sqrt(var)


@dataclass
class Normalizer:
    """Per-channel normalisation with JSON-serialisable statistics.

    Attributes:
        mode: one of :data:`MODES`.
        mean: per-channel means (``fold``, ``band_mean``: fitted; ``l4s``: L4S_MEAN).
        std: per-channel stds (``fold``: fitted; ``l4s``: L4S_STD).
    """

    mode: str = "none"
    mean: list[float] | None = None
    std: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown normalisation mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.mode == "l4s" and self.mean is None:
            self.mean = [float(v) for v in L4S_MEAN]
            self.std = [float(v) for v in L4S_STD]

    @property
    def fitted(self) -> bool:
        return self.mode in ("none", "l4s") or self.mean is not None

    def fit(self, images: np.ndarray) -> Normalizer:
        """Fit per-channel statistics on ``images (N, C, H, W)`` (``fold``/``band_mean``); returns self."""
        if self.mode in ("none", "l4s"):
            return self
        if np.ndim(images) != 4 or len(images) == 0:
            raise ValueError(f"Normalizer.fit expects a non-empty (N, C, H, W) array, got shape {np.shape(images)}")
        mean, std = _channel_stats(images)
        if self.mode == "band_mean" and np.any(np.abs(mean) < STD_FLOOR):
            bad = np.flatnonzero(np.abs(mean) < STD_FLOOR).tolist()
            raise ValueError(f"band_mean normalisation: channels {bad} have mean ~0, expected non-zero means")
        self.mean = [float(v) for v in mean]
        self.std = [float(max(v, STD_FLOOR)) for v in std]
        return self

    def _params(self, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) of length ``n_channels``: ``y = (x - offset) / scale``."""
        if not self.fitted:
            raise ValueError(f"Normalizer mode {self.mode!r} must be fitted on training images first")
        off = np.zeros(n_channels, dtype=np.float32)
        scale = np.ones(n_channels, dtype=np.float32)
        if self.mode == "none":
            return off, scale
        assert self.mean is not None
        k = len(self.mean)
        if self.mode == "l4s":
            if n_channels < k:
                raise ValueError(f"l4s normalisation needs the {k} L4S bands first, got {n_channels} channels")
            off[:k] = self.mean
            scale[:k] = self.std  # type: ignore[index]
            return off, scale
        if n_channels != k:
            raise ValueError(f"Normalizer was fitted on {k} channels, got an input with {n_channels}")
        if self.mode == "fold":
            off[:] = self.mean
            scale[:] = self.std  # type: ignore[index]
        else:  # band_mean
            scale[:] = self.mean
        return off, scale

    def __call__(self, x: Any) -> Any:
        """Normalise ``(C, H, W)`` or ``(B, C, H, W)``; NumPy -> float32 NumPy, torch -> torch on x's device."""
        if x.ndim not in (3, 4):
            raise ValueError(f"Normalizer expects (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
        cdim = x.ndim - 3
        off, scale = self._params(int(x.shape[cdim]))
        shape = (-1, 1, 1)
        if type(x).__module__.startswith("torch"):
            o = torch.as_tensor(off, device=x.device).view(shape)
            s = torch.as_tensor(scale, device=x.device).view(shape)
            return (x.float() - o) / s
        return ((np.asarray(x, dtype=np.float32) - off.reshape(shape)) / scale.reshape(shape)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``from_dict`` inverts it)."""
        return {"mode": self.mode, "mean": self.mean, "std": self.std, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        """Rebuild from :meth:`to_dict` output; ``ValueError`` on a malformed dict."""
        if not isinstance(data, dict) or "mode" not in data:
            raise ValueError(f"normaliser statistics must be a dict with a 'mode' key, got {str(data)[:80]!r}")
        mean, std = data.get("mean"), data.get("std")
        if mean is not None and std is not None and len(mean) != len(std):
            raise ValueError(f"normaliser statistics: mean has {len(mean)} values but std has {len(std)}")
        return cls(
            mode=str(data["mode"]),
            mean=None if mean is None else [float(v) for v in mean],
            std=None if std is None else [float(v) for v in std],
            extra=dict(data.get("extra") or {}),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Normalizer:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"normaliser statistics are not valid JSON: {exc}") from None
        return cls.from_dict(data)
