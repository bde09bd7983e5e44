"""Raw patches to model inputs: cleaning, feature engineering and normalisation, in one object.

:class:`Preprocessor` is what training (once per run, on the training device) and inference (per
batch) both apply, so a model always sees its inputs made the same way; its normaliser statistics
travel with the model (``imagery.inference.serving``).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from imagery.data.bands import BANDS, L4S_MEAN, L4S_STD, band_indices, canonical_bands, is_temporal_band_set
from imagery.transforms.features import compute_features
from imagery.transforms.normalize import Normalizer, clean_image


class Preprocessor:
    """Raw L4S values ``(B, len(bands), H, W)`` -> model input ``(B, C, H, W)`` float32, on the input's device.

    Steps: ``imagery.transforms.normalize.clean_image`` (NaN/Inf replaced, outliers clipped), then
    ``imagery.transforms.features.compute_features(x, channel_set, bands)`` (the bands in
    ``imagery.data.bands.BANDS`` order, then the engineered channels computable from them), then the fitted
    ``Normalizer`` (mode ``"none"`` is the identity). ``bands``: the model's band set (default all 14).
    """

    def __init__(
        self, channel_set: int = 23, normalizer: Any | None = None, bands: tuple[str, ...] | list[str] | None = None
    ) -> None:
        self.channel_set = int(channel_set)
        self.normalizer = normalizer
        #: temporal channels (``imagery.data.sen12_temporal``) pass through: NaN/Inf -> 0, nothing clipped or engineered
        self.temporal = is_temporal_band_set(bands)
        self.bands: tuple[str, ...] = BANDS if not bands else tuple(bands) if self.temporal else canonical_bands(bands)

    def features(self, raw: np.ndarray | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """Cleaned, engineered but not normalised channels ``(B, C, H, W)`` float32 on ``device``.

        Cleaning runs in NumPy on the CPU (``clean_image``). The feature engineering runs on ``device``
        (default: the input's device): batched torch on a GPU; on the CPU the NumPy/OpenCV path, which
        is faster there (its 15x15 median filter especially; the two paths agree, see the data tests).
        On the CPU a batch is split into as many parts as torch has threads (``torch.get_num_threads()``)
        and the parts run side by side (NumPy and OpenCV release the GIL): every step works patch by
        patch, so the result is the same bit for bit; the network waits for it, so its cores are free.
        """
        if device is None:
            device = raw.device if isinstance(raw, torch.Tensor) else torch.device("cpu")
        arr = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
        if torch.device(device).type == "cpu":
            parts = _split(arr, torch.get_num_threads())
            if len(parts) == 1:
                return torch.from_numpy(self._features_np(arr))
            return torch.from_numpy(np.concatenate(list(_pool().map(self._features_np, parts))))
        x = torch.from_numpy(self._cleaned(arr)).to(device)
        return compute_features(x, channel_set=self.channel_set, bands=self.bands).float()

    def _cleaned(self, arr: np.ndarray) -> np.ndarray:
        if self.temporal:
            cleaned = np.nan_to_num(np.asarray(arr, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        else:
            cleaned, _ = clean_image(arr, bands=self.bands)
        return np.ascontiguousarray(cleaned, dtype=np.float32)

    def _features_np(self, arr: np.ndarray) -> np.ndarray:
        """Cleaning and features of patches ``(B, len(bands), H, W)`` in NumPy/OpenCV: float32 ``(B, C, H, W)``."""
        feats = compute_features(self._cleaned(arr), channel_set=self.channel_set, bands=self.bands)
        return np.ascontiguousarray(feats, dtype=np.float32)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the fitted ``Normalizer`` to engineered channels (identity without one)."""
        return x if self.normalizer is None else _as_tensor(self.normalizer(x), x)

    def __call__(self, raw: np.ndarray | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        return self.normalize(self.features(raw, device))

    def transform_all(self, raw: np.ndarray | torch.Tensor, device: torch.device, chunk: int = 64) -> torch.Tensor:
        """Preprocess a whole set in chunks of ``chunk`` patches on ``device``; returns a tensor on ``device``."""
        n = int(raw.shape[0])
        if n == 0:
            raise ValueError("no patches to preprocess (the data set is empty)")
        return torch.cat([self(raw[start : start + chunk], device) for start in range(0, n, chunk)])


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The threads CPU preprocessing splits a batch over (one pool per process, as many as CPUs)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="preprocess")
        return _POOL


def _forget_pool() -> None:
    """In a forked child (a DataLoader or Dask worker): the parent's pool threads do not exist there."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _split(arr: np.ndarray, parts: int) -> list[np.ndarray]:
    """``arr`` cut along its first axis into at most ``parts`` pieces of at least 2 patches (one piece for a
    single 3-D patch)."""
    if arr.ndim != 4:
        return [arr]
    k = max(1, min(int(parts), len(arr) // 2))
    return [arr] if k == 1 else np.array_split(arr, k)


def _as_tensor(value: Any, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(like.device, torch.float32)
    return torch.as_tensor(np.asarray(value, dtype=np.float32), device=like.device)


def fit_normalizer(
    mode: str, train_features: torch.Tensor | np.ndarray, bands: tuple[str, ...] | list[str] | None = None
) -> Any | None:
    """A ``Normalizer(mode)`` fitted on the engineered channels ``(N, C, H, W)`` of the training patches
    (``None`` for mode ``none``); mode ``l4s`` takes the L4S statistics of the model's ``bands``."""
    if mode in ("none", "", None):
        return None
    if mode == "l4s" and bands:
        idx = band_indices(list(canonical_bands(bands)))
        return Normalizer(mode="l4s", mean=[float(L4S_MEAN[i]) for i in idx], std=[float(L4S_STD[i]) for i in idx])
    feats = train_features.detach().cpu().numpy() if isinstance(train_features, torch.Tensor) else train_features
    normalizer = Normalizer(mode=mode)
    normalizer.fit(feats)
    return normalizer
