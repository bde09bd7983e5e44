"""Reading and writing Landslide4Sense (L4S) patches.

On disk (as published): ``image_N.h5`` holds dataset ``img`` of shape ``(H, W, 14)``
(float64 in the release; float16/32/64 accepted) and ``mask_N.h5`` holds dataset ``mask`` of
shape ``(H, W)`` uint8 with values 0/1 (255 is read as 1 with a warning; anything else is an
error). In memory patches are channel-first ``(14, H, W)`` float32 (band order:
:data:`imagery.data.bands.BANDS`), masks ``(H, W)`` uint8 0/1.

Folder layouts (detected by :func:`detect_layout`, or forced with ``layout=``):

* ``official``: ``TrainData/img/image_N.h5`` + ``TrainData/mask/mask_N.h5``, ``ValidData/...``, ``TestData/...``
* ``hf`` (Hugging Face mirror): ``images/{train,validation,test}/image_N.h5`` + ``masks/{...}/mask_N.h5``
* ``plain``: ``img/image_N.h5`` + ``mask/mask_N.h5`` (the split name is ignored)

(A folder written by ``python -m pipelines.prepare_imagery`` is the ``cache`` layout: see
:mod:`imagery.data.cache`; :func:`imagery.data.datasets.load_patches` reads every layout.)

Images and masks are paired by the id ``N`` in the file name, never by sort order; patches
are returned in increasing id order (the natural sort order used by the seed's folds).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from common.atomic import atomic_path
from common.cli import InputNotFoundError, UserError, errors_message, one_line
from imagery.data.bands import N_BANDS

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


# --------------------------------------------------------------------------- single files


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputNotFoundError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected an HDF5 file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: zero-byte file, expected an L4S HDF5 file")
    if not h5py.is_hdf5(path):
        raise UserError(f"{path}: not an HDF5 file, expected an L4S HDF5 file")


def _read_dataset(path: Path, key: str) -> np.ndarray:
    _check_file(path)
    try:
        with h5py.File(path, "r") as fh:
            if key not in fh:
                raise UserError(f"{path}: no dataset {key!r} (found {sorted(fh.keys())}), expected dataset {key!r}")
            obj = fh[key]
            if not isinstance(obj, h5py.Dataset):
                raise UserError(f"{path}: {key!r} is not a dataset")
            return obj[()]
    except (OSError, RuntimeError, KeyError) as exc:  # truncated / corrupt HDF5
        raise UserError(
            f"{path}: cannot read HDF5 dataset {key!r} (truncated or corrupt file?): {one_line(exc)}"
        ) from None


def read_image(path: str | os.PathLike[str], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Read one L4S image file; return ``(14, H, W)`` in ``dtype`` (float32 by default).

    The file must hold dataset ``img`` of shape ``(H, W, 14)`` with a float16/32/64 dtype.
    Values are returned unchanged (no cleaning; see :mod:`imagery.transforms.normalize`).
    """
    p = Path(path)
    arr = _read_dataset(p, IMAGE_KEY)
    if arr.ndim != 3 or arr.shape[2] != N_BANDS:
        raise UserError(f"{p}: dataset {IMAGE_KEY!r} has shape {arr.shape}, expected (H, W, {N_BANDS})")
    if arr.dtype.type not in _FLOAT_KINDS:
        raise UserError(f"{p}: dataset {IMAGE_KEY!r} has dtype {arr.dtype}, expected float16/float32/float64")
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0), dtype=dtype)


def check_some_finite(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Refuse an image whose every value is NaN/Inf: a bad file, never "an image of zeros".

    (Partly invalid images are kept: :func:`imagery.transforms.normalize.clean_image` replaces the
    invalid values and the replaced share is logged.)
    """
    if not np.isfinite(image).any():
        raise UserError(f"{path}: every value is NaN/Inf (an all-invalid image); expected finite band values")


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
        raise UserError(f"{p}: dataset {MASK_KEY!r} has shape {arr.shape}, expected (H, W)")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool or np.issubdtype(arr.dtype, np.floating)):
        raise UserError(f"{p}: dataset {MASK_KEY!r} has dtype {arr.dtype}, expected uint8")
    values = np.unique(arr)
    bad = [v for v in values.tolist() if v not in (0, 1, 255)]
    if bad:
        raise UserError(f"{p}: mask values {bad[:5]} found, expected only 0/1 (or 255 for landslide)")
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
        raise UserError(f"unknown split {split!r}; expected one of train, val, validation, test")
    return SPLIT_ALIASES[key]


def detect_layout(root: str | os.PathLike[str]) -> str:
    """Which of :data:`LAYOUTS` the folder ``root`` uses; ``ValueError`` when none fits."""
    r = Path(root)
    if not r.exists():
        raise InputNotFoundError(f"{r}: data folder not found")
    if not r.is_dir():
        raise UserError(f"{r}: expected a folder of L4S patches, got a file")
    if (r / "index.json").is_file():
        return "cache"
    if any((r / d).is_dir() for d in _OFFICIAL_DIRS.values()):
        return "official"
    if (r / "images").is_dir():
        return "hf"
    if (r / "img").is_dir():
        return "plain"
    raise UserError(
        f"{r}: no L4S layout found; expected TrainData/img/ (official), images/train/ (hf), img/ (plain) "
        "or an index.json cache"
    )


def split_dirs(root: str | os.PathLike[str], split: str = "train", layout: str | None = None) -> tuple[Path, Path]:
    """``(image_dir, mask_dir)`` of ``split`` in ``root`` (the mask folder may not exist)."""
    r = Path(root)
    lay = layout or detect_layout(r)
    if lay not in LAYOUTS or lay == "cache":
        raise UserError(f"layout {lay!r} has no image folders; expected one of official, hf, plain")
    s = normalize_split(split)
    if lay == "official":
        base = r / _OFFICIAL_DIRS[s]
        img, mask = base / "img", base / "mask"
    elif lay == "hf":
        img, mask = r / "images" / s, r / "masks" / s
    else:
        img, mask = r / "img", r / "mask"
    if not img.is_dir():
        raise InputNotFoundError(f"{img}: image folder for split {s!r} ({lay} layout) not found")
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
            raise UserError(f"{p}: unexpected file name, expected {kind}_N.h5 with an integer id N")
        pid = int(m.group(1))
        if pid in found:
            raise UserError(f"{p}: duplicate id {pid} (also {found[pid].name})")
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
        raise InputNotFoundError(f"{img_dir}: no image_N.h5 files found (empty folder?)")
    masks = _scan(mask_dir, _MASK_RE, "mask") if mask_dir.is_dir() else {}
    if not masks and require_masks:
        raise InputNotFoundError(f"{mask_dir}: no mask_N.h5 files found, expected one mask per image")
    if masks:
        missing = sorted(set(images) - set(masks))
        if missing:
            names = ", ".join(f"mask_{i}.h5" for i in missing[:10])
            raise InputNotFoundError(f"{mask_dir}: missing {len(missing)} mask(s) for images: {names}")
        orphans = sorted(set(masks) - set(images))
        if orphans:
            names = ", ".join(f"image_{i}.h5" for i in orphans[:10])
            raise InputNotFoundError(f"{img_dir}: missing {len(orphans)} image(s) for masks: {names}")
    return [PatchFile(i, images[i], masks.get(i)) for i in sorted(images)]


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
            check_some_finite(img, f.image)
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise UserError(f"{f.image}: shape {img.shape}, expected {shape} like the other patches")
            imgs.append(img)
        except UserError as exc:
            errors.append(one_line(exc))
            continue
        if labelled:
            try:
                m = read_mask(f.mask)  # type: ignore[arg-type]
                if m.shape != img.shape[1:]:
                    raise UserError(f"{f.mask}: mask shape {m.shape}, expected {img.shape[1:]} like image_{f.id}.h5")
                msks.append(m)
            except UserError as exc:
                errors.append(one_line(exc))
    if errors:
        raise UserError(errors_message(errors, where))
    images = np.stack(imgs).astype(dtype, copy=False)
    masks = np.stack(msks) if labelled and msks else None
    return images, masks
