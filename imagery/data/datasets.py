"""Data sources as datasets: load any L4S layout (or a cache) into a :class:`PatchSet`, or index it lazily.

* :func:`load_patches`: every patch of a split into memory (or memory-mapped from a cache).
* :class:`L4SDataset`: a torch-style dataset that reads one patch per item (torchgeo-like).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common.cli import UserError
from imagery.data.cache import open_cache
from imagery.data.l4s import (
    LAYOUTS,
    PatchFile,
    detect_layout,
    list_patch_files,
    read_image,
    read_mask,
    read_patch_files,
    split_dirs,
)
from imagery.data.patches import PatchSet
from imagery.plot import plot_patch


def load_patches(
    root: str | os.PathLike[str],
    split: str = "train",
    layout: str | None = None,
    require_masks: bool = False,
    dtype: np.dtype | type = np.float32,
) -> PatchSet:
    """Load every patch of ``split`` from ``root`` (any layout in :data:`LAYOUTS`).

    ``root`` may also be a cache folder written by ``pipelines.prepare_imagery``; its
    arrays are then memory-mapped (see :func:`imagery.data.cache.open_cache`).
    Returns a :class:`PatchSet` in increasing id order.
    """
    lay = layout or detect_layout(root)
    if lay not in LAYOUTS:
        raise UserError(f"unknown layout {lay!r}; expected one of {', '.join(LAYOUTS)}")
    if lay == "cache":
        ps = open_cache(root, split)
        if require_masks and ps.masks is None:
            raise UserError(f"{root}: cache split {split!r} has no masks, but masks are required")
        return ps
    files = list_patch_files(root, split, lay, require_masks=require_masks)
    images, masks = read_patch_files(files, dtype=dtype, where=str(split_dirs(root, split, lay)[0]))
    return PatchSet(images, masks, np.array([f.id for f in files], dtype=np.int64), [str(f.image) for f in files])


class L4SDataset:
    """Torch-style (torchgeo-like) dataset over L4S patches.

    ``ds[i]`` is ``dict(image=FloatTensor (14, H, W), mask=LongTensor (H, W), id=int)``; ``mask``
    is absent for unlabelled data. Folder layouts read one file per item (like the official
    baseline); a cache folder is memory-mapped. ``transforms`` (optional) is called on the dict.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        layout: str | None = None,
        require_masks: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.layout = layout or detect_layout(self.root)
        self._patches: PatchSet | None = None
        self._files: list[PatchFile] = []
        if self.layout == "cache":
            self._patches = load_patches(self.root, split, layout="cache", require_masks=require_masks)
            self.ids = self._patches.ids
        else:
            self._files = list_patch_files(self.root, split, self.layout, require_masks=require_masks)
            self.ids = np.array([f.id for f in self._files], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def _raw(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self._patches is not None:
            img = np.array(self._patches.images[index], dtype=np.float32, copy=True)  # writable, off the memmap
            m = None if self._patches.masks is None else np.array(self._patches.masks[index], copy=True)
            return img, m
        f = self._files[index]
        return read_image(f.image), (read_mask(f.mask) if f.mask is not None else None)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch  # noqa: PLC0415 - imagery.data is read by fusion, which must not import torch

        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        index = index % len(self)
        img, m = self._raw(index)
        sample: dict[str, Any] = {"image": torch.from_numpy(img), "id": int(self.ids[index])}
        if m is not None:
            sample["mask"] = torch.from_numpy(m.astype(np.int64))
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def plot(self, index: int, title: str | None = None) -> Any:
        """A matplotlib Figure of patch ``index``: RGB composite and mask (see :mod:`imagery.plot`)."""
        img, m = self._raw(index)
        return plot_patch(img, mask=m, title=title or f"{self.split} patch {int(self.ids[index])}")
