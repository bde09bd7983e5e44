"""Reading and writing Landslide4Sense (L4S) patches.

On disk (as published): ``image_N.h5`` holds dataset ``img`` of shape ``(H, W, 14)``
(float64 in the release; float16/32/64 accepted) and ``mask_N.h5`` holds dataset ``mask`` of
shape ``(H, W)`` uint8 with values 0/1 (255 is read as 1 with a warning; anything else is an
error). In memory patches are channel-first ``(14, H, W)`` float32 (band order:
:data:`imagery.bands.BANDS`), masks ``(H, W)`` uint8 0/1.

Folder layouts (detected by :func:`detect_layout`, or forced with ``layout=``):

* ``official``: ``TrainData/img/image_N.h5`` + ``TrainData/mask/mask_N.h5``, ``ValidData/...``, ``TestData/...``
* ``hf`` (Hugging Face mirror): ``images/{train,validation,test}/image_N.h5`` + ``masks/{...}/mask_N.h5``
* ``plain``: ``img/image_N.h5`` + ``mask/mask_N.h5`` (the split name is ignored)
* ``cache``: a folder written by ``python -m pipelines.prepare_imagery`` (``index.json`` + ``.npy`` memmaps)

Images and masks are paired by the id ``N`` in the file name, never by sort order; patches
are returned in increasing id order (the natural sort order used by the seed's folds).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from common.atomic import atomic_path
from imagery.bands import N_BANDS

IMAGE_KEY = "img"
MASK_KEY = "mask"
LAYOUTS = ("official", "hf", "plain", "cache")
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
}
_OFFICIAL_DIRS = {"train": "TrainData", "validation": "ValidData", "test": "TestData"}
_IMAGE_RE = re.compile(r"^image_(\d+)\.h5$")
_MASK_RE = re.compile(r"^mask_(\d+)\.h5$")
_FLOAT_KINDS = (np.float16, np.float32, np.float64)
MAX_ERRORS_SHOWN = 20


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- PatchSet


@dataclass
class PatchSet:
    """A set of L4S patches in memory (or memory-mapped).

    Attributes:
        images: ``(N, 14, H, W)`` float32 (or float16 from a float16 cache), bands in
            :data:`imagery.bands.BANDS` order, pre-scaled L4S values.
        masks: ``(N, H, W)`` uint8 0/1, or ``None`` for unlabelled data.
        ids: ``(N,)`` int64 patch ids (the ``N`` of ``image_N.h5``).
        paths: the N source image paths (strings).
    """

    images: np.ndarray
    masks: np.ndarray | None
    ids: np.ndarray
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"PatchSet.images must be (N, C, H, W), got shape {self.images.shape}")
        n = self.images.shape[0]
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if self.ids.shape != (n,):
            raise ValueError(f"PatchSet.ids must have shape ({n},), got {self.ids.shape}")
        if self.masks is not None and self.masks.shape != (n, *self.images.shape[2:]):
            raise ValueError(f"PatchSet.masks must have shape {(n, *self.images.shape[2:])}, got {self.masks.shape}")
        if self.paths and len(self.paths) != n:
            raise ValueError(f"PatchSet.paths must have {n} entries, got {len(self.paths)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    def subset(self, idx: Sequence[int] | np.ndarray) -> PatchSet:
        """The patches at positions ``idx`` (integer positions or a boolean mask), loaded into memory."""
        sel = np.asarray(idx)
        if sel.dtype == bool:
            sel = np.flatnonzero(sel)
        sel = sel.astype(np.int64)
        return PatchSet(
            images=np.asarray(self.images[sel]),
            masks=None if self.masks is None else np.asarray(self.masks[sel]),
            ids=self.ids[sel],
            paths=[self.paths[i] for i in sel] if self.paths else [],
        )

    def select_ids(self, ids: Sequence[int] | np.ndarray) -> PatchSet:
        """The patches with the given ids (in that order); ``ValueError`` naming unknown ids."""
        pos = {int(v): i for i, v in enumerate(self.ids)}
        missing = [int(v) for v in ids if int(v) not in pos]
        if missing:
            raise ValueError(f"patch ids not in this set: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        return self.subset([pos[int(v)] for v in ids])

    def patch_labels(self) -> np.ndarray:
        """``(N,)`` int64: 1 where the patch's mask has any landslide pixel."""
        if self.masks is None:
            raise ValueError("this PatchSet has no masks, so it has no patch labels")
        return (np.asarray(self.masks).reshape(len(self), -1).max(axis=1) > 0).astype(np.int64)


# --------------------------------------------------------------------------- single files


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected an HDF5 file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: zero-byte file, expected an L4S HDF5 file")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not an HDF5 file, expected an L4S HDF5 file")


def _read_dataset(path: Path, key: str) -> np.ndarray:
    _check_file(path)
    try:
        with h5py.File(path, "r") as fh:
            if key not in fh:
                raise ValueError(f"{path}: no dataset {key!r} (found {sorted(fh.keys())}), expected dataset {key!r}")
            obj = fh[key]
            if not isinstance(obj, h5py.Dataset):
                raise ValueError(f"{path}: {key!r} is not a dataset")
            return obj[()]
    except (OSError, RuntimeError, KeyError) as exc:  # truncated / corrupt HDF5
        raise ValueError(f"{path}: cannot read HDF5 dataset {key!r} (truncated or corrupt file?): {_one_line(exc)}") from None


def read_image(path: str | os.PathLike[str], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Read one L4S image file; return ``(14, H, W)`` in ``dtype`` (float32 by default).

    The file must hold dataset ``img`` of shape ``(H, W, 14)`` with a float16/32/64 dtype.
    Values are returned unchanged (no cleaning; see :mod:`imagery.normalize`).
    """
    p = Path(path)
    arr = _read_dataset(p, IMAGE_KEY)
    if arr.ndim != 3 or arr.shape[2] != N_BANDS:
        raise ValueError(f"{p}: dataset {IMAGE_KEY!r} has shape {arr.shape}, expected (H, W, {N_BANDS})")
    if arr.dtype.type not in _FLOAT_KINDS:
        raise ValueError(f"{p}: dataset {IMAGE_KEY!r} has dtype {arr.dtype}, expected float16/float32/float64")
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0), dtype=dtype)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one L4S mask file; return ``(H, W)`` uint8 with values 0/1.

    The file must hold dataset ``mask`` of shape ``(H, W)``. Value 255 is read as 1 with a
    warning; any value other than 0, 1 or 255 is a ``ValueError``.
    """
    p = Path(path)
    arr = _read_dataset(p, MASK_KEY)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{p}: dataset {MASK_KEY!r} has shape {arr.shape}, expected (H, W)")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{p}: dataset {MASK_KEY!r} has dtype {arr.dtype}, expected uint8")
    values = np.unique(arr)
    bad = [v for v in values.tolist() if v not in (0, 1, 255)]
    if bad:
        raise ValueError(f"{p}: mask values {bad[:5]} found, expected only 0/1 (or 255 for landslide)")
    if 255 in values.tolist():
        warnings.warn(f"{p}: mask value 255 read as landslide (1)", UserWarning, stacklevel=2)
    return (arr > 0).astype(np.uint8)


def write_image(path: str | os.PathLike[str], image_chw: np.ndarray, dtype: np.dtype | type | None = None) -> Path:
    """Write a ``(14, H, W)`` image as L4S ``img`` ``(H, W, 14)`` (atomically).

    ``dtype``: on-disk dtype (default: the array's float dtype; the release uses float64).
    """
    img = np.asarray(image_chw)
    if img.ndim != 3 or img.shape[0] != N_BANDS:
        raise ValueError(f"{path}: image to write has shape {img.shape}, expected ({N_BANDS}, H, W)")
    out_dtype = np.dtype(dtype) if dtype is not None else (img.dtype if img.dtype.type in _FLOAT_KINDS else np.float32)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset(IMAGE_KEY, data=np.ascontiguousarray(np.moveaxis(img, 0, -1), dtype=out_dtype))
    return Path(path)


def write_mask(path: str | os.PathLike[str], mask: np.ndarray) -> Path:
    """Write an ``(H, W)`` 0/1 mask as L4S ``mask`` uint8 (atomically)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{path}: mask to write has shape {m.shape}, expected (H, W)")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset(MASK_KEY, data=m.astype(np.uint8))
    return Path(path)


# --------------------------------------------------------------------------- layouts


def normalize_split(split: str) -> str:
    """Canonical split name (``train`` / ``validation`` / ``test``); accepts ``val``, ``valid``."""
    key = str(split).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; expected one of train, val, validation, test")
    return SPLIT_ALIASES[key]


def detect_layout(root: str | os.PathLike[str]) -> str:
    """Which of :data:`LAYOUTS` the folder ``root`` uses; ``ValueError`` when none fits."""
    r = Path(root)
    if not r.exists():
        raise FileNotFoundError(f"{r}: data folder not found")
    if not r.is_dir():
        raise ValueError(f"{r}: expected a folder of L4S patches, got a file")
    if (r / "index.json").is_file():
        return "cache"
    if any((r / d).is_dir() for d in _OFFICIAL_DIRS.values()):
        return "official"
    if (r / "images").is_dir():
        return "hf"
    if (r / "img").is_dir():
        return "plain"
    raise ValueError(
        f"{r}: no L4S layout found; expected TrainData/img/ (official), images/train/ (hf), img/ (plain) "
        "or an index.json cache"
    )


def split_dirs(root: str | os.PathLike[str], split: str = "train", layout: str | None = None) -> tuple[Path, Path]:
    """``(image_dir, mask_dir)`` of ``split`` in ``root`` (the mask folder may not exist)."""
    r = Path(root)
    lay = layout or detect_layout(r)
    if lay not in LAYOUTS or lay == "cache":
        raise ValueError(f"layout {lay!r} has no image folders; expected one of official, hf, plain")
    s = normalize_split(split)
    if lay == "official":
        base = r / _OFFICIAL_DIRS[s]
        img, mask = base / "img", base / "mask"
    elif lay == "hf":
        img, mask = r / "images" / s, r / "masks" / s
    else:
        img, mask = r / "img", r / "mask"
    if not img.is_dir():
        raise FileNotFoundError(f"{img}: image folder for split {s!r} ({lay} layout) not found")
    return img, mask


@dataclass(frozen=True)
class PatchFile:
    """One patch on disk: its id, image path and mask path (``None`` when unlabelled)."""

    id: int
    image: Path
    mask: Path | None


def _scan(folder: Path, pattern: re.Pattern[str], kind: str) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() != ".h5":
            continue
        m = pattern.match(p.name)
        if m is None:
            raise ValueError(f"{p}: unexpected file name, expected {kind}_N.h5 with an integer id N")
        pid = int(m.group(1))
        if pid in found:
            raise ValueError(f"{p}: duplicate id {pid} (also {found[pid].name})")
        found[pid] = p
    return found


def list_patch_files(
    root: str | os.PathLike[str], split: str = "train", layout: str | None = None, require_masks: bool = False
) -> list[PatchFile]:
    """The patch files of ``split``, paired by id, in increasing id order.

    Masks are optional when the mask folder is absent or empty (unlabelled data) unless
    ``require_masks``; once any mask exists, every image needs its ``mask_N.h5`` and every
    mask its ``image_N.h5``.
    """
    img_dir, mask_dir = split_dirs(root, split, layout)
    images = _scan(img_dir, _IMAGE_RE, "image")
    if not images:
        raise FileNotFoundError(f"{img_dir}: no image_N.h5 files found (empty folder?)")
    masks = _scan(mask_dir, _MASK_RE, "mask") if mask_dir.is_dir() else {}
    if not masks and require_masks:
        raise FileNotFoundError(f"{mask_dir}: no mask_N.h5 files found, expected one mask per image")
    if masks:
        missing = sorted(set(images) - set(masks))
        if missing:
            names = ", ".join(f"mask_{i}.h5" for i in missing[:10])
            raise FileNotFoundError(f"{mask_dir}: missing {len(missing)} mask(s) for images: {names}")
        orphans = sorted(set(masks) - set(images))
        if orphans:
            names = ", ".join(f"image_{i}.h5" for i in orphans[:10])
            raise FileNotFoundError(f"{img_dir}: missing {len(orphans)} image(s) for masks: {names}")
    return [PatchFile(i, images[i], masks.get(i)) for i in sorted(images)]


def _errors_message(errors: list[str], where: str) -> str:
    shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
    more = f"; ... and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
    return f"{len(errors)} bad file(s) in {where}: {shown}{more}"


def read_patch_files(
    files: Sequence[PatchFile], dtype: np.dtype | type = np.float32, where: str = "data"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``files`` into ``(images (N,14,H,W), masks (N,H,W) | None)``.

    Every file is checked; all problems are reported together in one ``ValueError``.
    All patches must share one ``(H, W)``.
    """
    errors: list[str] = []
    imgs: list[np.ndarray] = []
    msks: list[np.ndarray] = []
    labelled = all(f.mask is not None for f in files)
    shape: tuple[int, ...] | None = None
    for f in files:
        try:
            img = read_image(f.image, dtype=dtype)
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise ValueError(f"{f.image}: shape {img.shape}, expected {shape} like the other patches")
            imgs.append(img)
        except (ValueError, FileNotFoundError) as exc:
            errors.append(_one_line(exc))
            continue
        if labelled:
            try:
                m = read_mask(f.mask)  # type: ignore[arg-type]
                if m.shape != img.shape[1:]:
                    raise ValueError(f"{f.mask}: mask shape {m.shape}, expected {img.shape[1:]} like image_{f.id}.h5")
                msks.append(m)
            except (ValueError, FileNotFoundError) as exc:
                errors.append(_one_line(exc))
    if errors:
        raise ValueError(_errors_message(errors, where))
    images = np.stack(imgs).astype(dtype, copy=False)
    masks = np.stack(msks) if labelled and msks else None
    return images, masks


def load_patches(
    root: str | os.PathLike[str],
    split: str = "train",
    layout: str | None = None,
    require_masks: bool = False,
    dtype: np.dtype | type = np.float32,
) -> PatchSet:
    """Load every patch of ``split`` from ``root`` (any layout in :data:`LAYOUTS`).

    ``root`` may also be a cache folder written by ``pipelines.prepare_imagery``; its
    arrays are then memory-mapped (see :func:`imagery.cache.open_cache`).
    Returns a :class:`PatchSet` in increasing id order.
    """
    lay = layout or detect_layout(root)
    if lay not in LAYOUTS:
        raise ValueError(f"unknown layout {lay!r}; expected one of {', '.join(LAYOUTS)}")
    if lay == "cache":
        from imagery.cache import open_cache

        ps = open_cache(root, split)
        if require_masks and ps.masks is None:
            raise ValueError(f"{root}: cache split {split!r} has no masks, but masks are required")
        return ps
    files = list_patch_files(root, split, lay, require_masks=require_masks)
    images, masks = read_patch_files(files, dtype=dtype, where=str(split_dirs(root, split, lay)[0]))
    return PatchSet(images, masks, np.array([f.id for f in files], dtype=np.int64), [str(f.image) for f in files])


# --------------------------------------------------------------------------- torch dataset


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
        import torch

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
        from imagery.plot import plot_patch

        img, m = self._raw(index)
        return plot_patch(img, mask=m, title=title or f"{self.split} patch {int(self.ids[index])}")
