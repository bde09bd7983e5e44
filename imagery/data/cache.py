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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from common.atomic import atomic_path, atomic_write, check_free_space
from common.cli import InputNotFoundError, UserError, errors_message, one_line
from common.fingerprint import Fingerprint, fingerprint_files
from common.tracking import log_fingerprint
from imagery.data.l4s import (
    check_some_finite,
    detect_layout,
    list_patch_files,
    normalize_split,
    read_image,
    read_mask,
    split_dirs,
)
from imagery.data.patches import PatchSet

FORMAT = "l4s-cache/1"
INDEX = "index.json"
CACHE_DTYPES = ("float32", "float16")


def _read_index(root: Path) -> dict[str, Any]:
    path = root / INDEX
    if not path.is_file():
        raise InputNotFoundError(f"{path}: cache index not found (build it with python -m pipelines.prepare_imagery)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cache index is not valid JSON ({one_line(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("splits"), dict):
        raise UserError(f"{path}: expected a cache index with format {FORMAT!r} and a 'splits' dict")
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
        raise UserError(f"cache dtype must be one of {', '.join(CACHE_DTYPES)}, got {dtype!r}")
    src = Path(data_dir)
    lay = layout or detect_layout(src)
    if lay == "cache":
        raise UserError(f"{src}: is already a cache; expected a folder of L4S HDF5 files")
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
        except UserError as exc:
            early.append(one_line(exc))
    if first is None:
        raise UserError(errors_message(early, str(img_dir)))
    shape = (len(files), *first.shape)
    n_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize + (int(np.prod(shape)) // shape[1] if labelled else 0)
    check_free_space(out, n_bytes, what=f"the {s} cache ({len(files)} patches)")
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
                check_some_finite(img, f.image)
                if img.shape != first.shape:
                    raise UserError(f"{f.image}: shape {img.shape}, expected {first.shape} like the other patches")
                n_nonfinite += int(np.count_nonzero(~np.isfinite(img)))
                images[i] = img
            except UserError as exc:
                errors.append(one_line(exc))
            if masks is not None and f.mask is not None:
                try:
                    m = read_mask(f.mask)
                    if m.shape != first.shape[1:]:
                        raise UserError(f"{f.mask}: mask shape {m.shape}, expected {first.shape[1:]}")
                    masks[i] = m
                except UserError as exc:
                    errors.append(one_line(exc))
        if errors:  # the atomic paths remove their temporary files; nothing is written
            raise UserError(errors_message(errors, str(img_dir)))
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
        raise UserError(f"{r / INDEX}: no split {s!r} in the cache (has {sorted(index['splits'])})")
    e = index["splits"][s]
    img_path = r / e["images"]
    if not img_path.is_file():
        raise InputNotFoundError(f"{img_path}: cached image array not found")
    try:
        images = np.load(img_path, mmap_mode="r", allow_pickle=False)
        masks = np.load(r / e["masks"], mmap_mode="r", allow_pickle=False) if e.get("masks") else None
    except (ValueError, OSError) as exc:
        raise UserError(f"{r}: cannot open cached arrays for split {s!r}: {one_line(exc)}") from None
    if list(images.shape) != list(e["shape"]):
        raise UserError(f"{img_path}: shape {images.shape}, expected {tuple(e['shape'])} from {INDEX}")
    return PatchSet(images=images, masks=masks, ids=np.asarray(e["ids"], dtype=np.int64), paths=list(e["paths"]))


@dataclass
class PrepareImageryConfig:
    """``python -m pipelines.prepare_imagery``: source folder, cache folder, splits, layout, cache dtype."""

    data: str
    out: str
    splits: list[str] = field(default_factory=lambda: ["train"])
    layout: str | None = None
    dtype: str = "float32"
    seed: int = 42


def prepare_cache(cfg: PrepareImageryConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Build the cache of every split of ``cfg`` (:func:`build_cache`); logs fingerprints, counts and the
    index to the active MLflow run and returns the index entries."""
    if not Path(cfg.data).exists():
        raise InputNotFoundError(f"{cfg.data}: data folder not found")
    layout = cfg.layout or detect_layout(cfg.data)
    if layout == "cache":
        raise UserError(f"{cfg.data}: is already a prepare_imagery cache; expected a folder of L4S HDF5 files")
    splits = list(dict.fromkeys(normalize_split(x) for x in cfg.splits))
    if layout == "plain" and len(splits) > 1:
        raise UserError(
            f"{cfg.data}: the plain layout (img/ + mask/) has one split, so --split {' '.join(cfg.splits)} would pack "
            "the same patches twice; give one split, or use the official or hf layout for several"
        )
    entries = []
    with _no_empty_folder(Path(cfg.out)):
        for split in splits:
            entries.append(_prepare_split(cfg, split, log))
    mlflow.log_artifact(str(Path(cfg.out) / INDEX))
    return entries


@contextlib.contextmanager
def _no_empty_folder(out: Path) -> Iterator[None]:
    """Remove the folders of ``out`` this block created when it fails and they are still empty (a refused
    cache, e.g. on a full disk, leaves no empty folder behind)."""
    made = [p for p in (out, *out.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only an empty folder
        raise


def _prepare_split(cfg: PrepareImageryConfig, split: str, log: Callable[[str], None]) -> dict[str, Any]:
    """One split of :func:`prepare_cache`: build it, log its fingerprint and counts; returns its index entry."""
    t0 = time.perf_counter()
    entry = build_cache(cfg.data, cfg.out, split=split, layout=cfg.layout, dtype=cfg.dtype)
    secs = time.perf_counter() - t0
    n = int(entry["shape"][0])
    log_fingerprint(Fingerprint(entry["fingerprint"], n, 0, str(cfg.data)), prefix=f"data_{split}")
    mlflow.log_metrics(
        {
            f"{split}_patches": n,
            f"{split}_seconds": secs,
            f"{split}_nonfinite": entry["n_nonfinite"],
            f"{split}_nonfinite_share": entry["n_nonfinite"] / max(1, int(np.prod(entry["shape"]))),
        }
    )
    labelled = "with masks" if entry["masks"] else "no masks"
    log(f"{split}: {n} patches ({labelled}) -> {Path(cfg.out) / entry['images']} in {secs:.1f}s")
    return entry


def cache_info(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``index.json`` of a cache folder."""
    return _read_index(Path(root))
