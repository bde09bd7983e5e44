"""A fast patch store: one memory-mapped ``.npy`` per split and an ``index.json``.

Layout of a cache folder (written by :func:`build_cache` / ``python -m pipelines.prepare_imagery``)::

    CACHE/index.json              {"format": "l4s-cache/1", "splits": {"train": {...}, ...}}
    CACHE/train_images.npy        (N, 14, H, W) float32 (or float16), channel-first, values as stored
    CACHE/train_masks.npy         (N, H, W) uint8 0/1 (absent for unlabelled splits)

Each split entry of ``index.json`` holds ``ids``, ``paths`` (source image files), ``dtype``,
``shape``, ``fingerprint`` (sha256 of the source files, :func:`common.fingerprint.fingerprint_files`),
``n_nonfinite`` (NaN/Inf count in the source; values are cached unchanged), ``layout`` and ``source``.
Every source file is read and checked before anything is written; all bad files are reported
together in one ``ValueError``. Outputs are written atomically (index last).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_path, atomic_write
from common.fingerprint import fingerprint_files
from imagery.dataset import (
    PatchSet,
    _errors_message,
    _one_line,
    detect_layout,
    list_patch_files,
    normalize_split,
    read_image,
    read_mask,
    split_dirs,
)

FORMAT = "l4s-cache/1"
INDEX = "index.json"
CACHE_DTYPES = ("float32", "float16")


def _read_index(root: Path) -> dict[str, Any]:
    path = root / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path}: cache index not found (build it with python -m pipelines.prepare_imagery)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cache index is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("splits"), dict):
        raise ValueError(f"{path}: expected a cache index with format {FORMAT!r} and a 'splits' dict")
    return data


def build_cache(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    split: str = "train",
    layout: str | None = None,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Pack the ``split`` patches of ``data_dir`` into ``out_dir``; return the split's index entry.

    ``dtype``: ``float32`` (default) or ``float16`` for the images in the cache.
    Raises ``ValueError`` listing every bad source file, before anything is written.
    """
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype must be one of {', '.join(CACHE_DTYPES)}, got {dtype!r}")
    src = Path(data_dir)
    lay = layout or detect_layout(src)
    if lay == "cache":
        raise ValueError(f"{src}: is already a cache; expected a folder of L4S HDF5 files")
    s = normalize_split(split)
    files = list_patch_files(src, s, lay)
    img_dir = split_dirs(src, s, lay)[0]
    labelled = all(f.mask is not None for f in files)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    first = None
    early: list[str] = []
    for f in files:  # shape reference: the first readable image (bad ones are reported below)
        try:
            first = read_image(f.image)
            break
        except (ValueError, FileNotFoundError) as exc:
            early.append(_one_line(exc))
    if first is None:
        raise ValueError(_errors_message(early, str(img_dir)))
    shape = (len(files), *first.shape)
    img_name, mask_name = f"{s}_images.npy", f"{s}_masks.npy"
    errors: list[str] = []
    n_nonfinite = 0
    with contextlib.ExitStack() as stack:
        tmp_img = stack.enter_context(atomic_path(out / img_name))
        images = np.lib.format.open_memmap(tmp_img, mode="w+", dtype=np.dtype(dtype), shape=shape)
        masks = None
        if labelled:
            tmp_mask = stack.enter_context(atomic_path(out / mask_name))
            masks = np.lib.format.open_memmap(tmp_mask, mode="w+", dtype=np.uint8, shape=(shape[0], *shape[2:]))
        for i, f in enumerate(files):
            try:
                img = read_image(f.image)
                if img.shape != first.shape:
                    raise ValueError(f"{f.image}: shape {img.shape}, expected {first.shape} like the other patches")
                n_nonfinite += int(np.count_nonzero(~np.isfinite(img)))
                images[i] = img
            except (ValueError, FileNotFoundError) as exc:
                errors.append(_one_line(exc))
            if masks is not None and f.mask is not None:
                try:
                    m = read_mask(f.mask)
                    if m.shape != first.shape[1:]:
                        raise ValueError(f"{f.mask}: mask shape {m.shape}, expected {first.shape[1:]}")
                    masks[i] = m
                except (ValueError, FileNotFoundError) as exc:
                    errors.append(_one_line(exc))
        if errors:  # the atomic paths remove their temporary files; nothing is written
            raise ValueError(_errors_message(errors, str(img_dir)))
        images.flush()
        del images
        if masks is not None:
            masks.flush()
            del masks
    if not labelled:
        (out / mask_name).unlink(missing_ok=True)

    sources = [f.image for f in files] + [f.mask for f in files if f.mask is not None]
    entry = {
        "images": img_name,
        "masks": mask_name if labelled else None,
        "ids": [f.id for f in files],
        "paths": [str(f.image) for f in files],
        "dtype": dtype,
        "shape": list(shape),
        "fingerprint": fingerprint_files(sources).sha256,
        "n_nonfinite": n_nonfinite,
        "layout": lay,
        "source": str(src.resolve()),
    }
    index = _read_index(out) if (out / INDEX).is_file() else {"format": FORMAT, "splits": {}}
    index["splits"][s] = entry
    with atomic_write(out / INDEX) as fh:
        json.dump(index, fh)
    return entry


def open_cache(root: str | os.PathLike[str], split: str = "train") -> PatchSet:
    """A :class:`PatchSet` over the cached ``split`` with read-only memory-mapped arrays."""
    r = Path(root)
    index = _read_index(r)
    s = normalize_split(split)
    if s not in index["splits"]:
        raise ValueError(f"{r / INDEX}: no split {s!r} in the cache (has {sorted(index['splits'])})")
    e = index["splits"][s]
    img_path = r / e["images"]
    if not img_path.is_file():
        raise FileNotFoundError(f"{img_path}: cached image array not found")
    try:
        images = np.load(img_path, mmap_mode="r", allow_pickle=False)
        masks = np.load(r / e["masks"], mmap_mode="r", allow_pickle=False) if e.get("masks") else None
    except (ValueError, OSError) as exc:
        raise ValueError(f"{r}: cannot open cached arrays for split {s!r}: {_one_line(exc)}") from None
    if list(images.shape) != list(e["shape"]):
        raise ValueError(f"{img_path}: shape {images.shape}, expected {tuple(e['shape'])} from {INDEX}")
    return PatchSet(images=images, masks=masks, ids=np.asarray(e["ids"], dtype=np.int64), paths=list(e["paths"]))


def cache_info(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``index.json`` of a cache folder."""
    return _read_index(Path(root))
