"""Georeferenced image/label chip folders (GeoTIFF pairs) as a :class:`~imagery.data.patches.PatchSet`.

Layout: ``DIR/images/<stem>.tif`` with ``DIR/labels/<stem>.tif`` (or ``DIR/masks/<stem>.tif``), paired by
file stem (``.tif``/``.tiff``; a stem without its partner is an error naming it). Every label must lie
on exactly its image's grid (same CRS, transform, width and height): anything else is an error naming
both files. Read through ``common.geo`` only.

* **Bands** (``image_bands``, ``--image-bands B04,B03,B02,B08``): the band order of the image files, any
  spelling :func:`imagery.data.bands.canonical_band` accepts; ``-`` (or ``skip``) skips a file band.
  Without it, the files' band descriptions are used when every band has one. Bands outside the L4S set
  (``B8A``) are read but not kept (models take L4S bands only), with a warning.
* **Scale** (``image_scale``, ``--image-scale``): what the spectral values are, converted to the one model
  unit of :mod:`imagery.data.bands` ("Model units"):

  ==============  ===========================================================================
  ``reflectance``  reflectance 0..1
  ``dn``           Sentinel-2 digital numbers, ``reflectance = DN / 10000``
  ``dn-offset``    L2A digital numbers of processing baseline >= 04.00: ``(DN - 1000) / 10000``
  ``l4s``          already L4S model units (e.g. chips cut from L4S patches)
  ``auto``         ``dn`` for integer files, ``reflectance`` for float files (a float file whose
                   values exceed 10 is an error asking for ``--image-scale``)
  ==============  ===========================================================================

  ``slope`` is read as degrees and ``DEM`` as metres (unless ``l4s``).
* **Labels** (``label_map``, ``--label-map 0:ignore,1:0,2:1``): raw label value -> ``0`` (background),
  ``1`` (landslide) or ``ignore``. Default ``0:0,1:1``; any other value present is an error naming the
  file and the values. The label file's nodata value and image pixels that are nodata in any band are
  ignored too. Ignored pixels become :data:`~imagery.data.patches.IGNORE` (255) in the masks and count in
  neither the loss nor any metric; sparse labels (a few labelled pixels per chip) are fine.
* **Chip size**: chips are cut into ``tile`` x ``tile`` patches (the model's tile) with the scene tiler
  (``imagery.inference.predict.tile_starts`` rule: tiles every ``tile`` px, the last one flush with the far
  edge); where that last tile overlaps its neighbour, the overlapping pixels are ignored in it, so every
  labelled pixel is in exactly one patch (none dropped, none counted twice). Smaller chips (or edges) are
  padded to the tile by reflection, the padding ignored. Patches without any labelled pixel are skipped.
  All patches cut from one chip share a ``group`` (the training's validation split keeps groups whole).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import InputNotFoundError, UserError, errors_message, one_line
from common.geo import Grid, RasterOnGrid, pixel_size_m, read_raster
from imagery.data.bands import BANDS, IMAGE_SCALES, canonical_band, to_model_units
from imagery.data.patches import IGNORE, PatchSet

LABEL_DIRS: tuple[str, ...] = ("labels", "masks")
_SUFFIXES = (".tif", ".tiff")
_SKIP = ("-", "skip", "ignore", "none")


def is_chip_folder(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` has an ``images/`` folder and a ``labels/`` or ``masks/`` folder (the chip layout)."""
    r = Path(root)
    return (
        (r / "images").is_dir() and any((r / d).is_dir() for d in LABEL_DIRS) and not (r / "images" / "train").is_dir()
    )


def parse_label_map(text: str | None) -> dict[int, int]:
    """``"0:ignore,1:0,2:1"`` -> ``{0: IGNORE, 1: 0, 2: 1}``; ``None`` -> ``{0: 0, 1: 1}``."""
    if text is None or not str(text).strip():
        return {0: 0, 1: 1}
    out: dict[int, int] = {}
    for item in str(text).split(","):
        if not item.strip():
            continue
        raw, _, to = item.partition(":")
        try:
            key = int(float(raw.strip()))
        except ValueError:
            raise UserError(
                f"--label-map {text!r}: {raw.strip()!r} is not a label value (expected e.g. 0:ignore,1:0,2:1)"
            ) from None
        target = to.strip().lower()
        if target in ("ignore", "-", "nodata"):
            out[key] = IGNORE
        elif target in ("0", "1"):
            out[key] = int(target)
        else:
            raise UserError(f"--label-map {text!r}: {item.strip()!r} must map a value to 0, 1 or ignore")
    if not out:
        raise UserError(f"--label-map {text!r}: no mapping; expected e.g. 0:ignore,1:0,2:1")
    return out


@dataclass(frozen=True)
class ChipSpec:
    """How to read a chip folder: file band order, value scale, label map and the model's tile (px)."""

    image_bands: tuple[str, ...] | None = None
    image_scale: str = "auto"
    label_map: str | None = None
    tile: int = 128

    def __post_init__(self) -> None:
        if self.image_scale not in IMAGE_SCALES:
            raise UserError(f"--image-scale must be one of {', '.join(IMAGE_SCALES)}; got {self.image_scale!r}")


@dataclass(frozen=True)
class ChipPair:
    """One chip on disk: its stem, image file and label file."""

    stem: str
    image: Path
    label: Path


def list_chip_pairs(root: str | os.PathLike[str]) -> list[ChipPair]:
    """The image/label pairs of a chip folder, paired by stem, sorted by stem."""
    r = Path(root)
    if not r.is_dir():
        raise InputNotFoundError(f"{r}: chip folder not found")
    img_dir = r / "images"
    lab_dir = next((r / d for d in LABEL_DIRS if (r / d).is_dir()), None)
    if not img_dir.is_dir() or lab_dir is None:
        raise UserError(f"{r}: expected images/ and labels/ (or masks/) folders of GeoTIFF chips")

    def scan(folder: Path) -> dict[str, Path]:
        return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in _SUFFIXES and p.is_file()}

    images, labels = scan(img_dir), scan(lab_dir)
    if not images:
        raise InputNotFoundError(f"{img_dir}: no .tif chips found")
    missing = sorted(set(images) - set(labels))
    if missing:
        raise InputNotFoundError(
            f"{lab_dir}: no label for image chip(s) {', '.join(missing[:10])} (expected {lab_dir.name}/<stem>.tif)"
        )
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise InputNotFoundError(f"{img_dir}: no image for label chip(s) {', '.join(orphans[:10])}")
    return [ChipPair(s, images[s], labels[s]) for s in sorted(images)]


def _file_bands(path: Path, count: int, spec: ChipSpec, descriptions: Sequence[str | None]) -> list[str | None]:
    """Canonical band (or None = skipped) of each band of the file."""
    names: Sequence[str | None]
    if spec.image_bands is not None:
        names = spec.image_bands
        if len(names) != count:
            raise UserError(
                f"{path}: has {count} band(s) but --image-bands names {len(names)} ({','.join(spec.image_bands)})"
            )
    elif all(descriptions) and len(descriptions) == count:
        names = list(descriptions)
    else:
        raise UserError(
            f"{path}: {count} band(s) without band names; name their order with --image-bands (e.g. B04,B03,B02,B08)"
        )
    out: list[str | None] = []
    for n in names:
        if n is None or str(n).strip().lower() in _SKIP:
            out.append(None)
        else:
            out.append(canonical_band(str(n)))
    dup = sorted({b for b in out if b is not None and out.count(b) > 1})
    if dup:
        raise UserError(f"{path}: band(s) {', '.join(dup)} named more than once in the band order")
    return out


def _physical(values: np.ndarray, bands: list[str], scale: str, dtype_kind: str, path: Path) -> np.ndarray:
    """Spectral values to reflectance (slope/DEM stay degrees/metres) per ``scale``; ``l4s`` passes through."""
    if scale == "auto":
        scale = "dn" if dtype_kind in "iu" else "reflectance"
        spectral = [i for i, b in enumerate(bands) if b not in ("slope", "DEM")]
        if scale == "reflectance" and spectral and np.nanmax(np.abs(values[spectral])) > 10:
            raise UserError(
                f"{path}: float values up to {np.nanmax(values[spectral]):.0f} are not reflectance; "
                "pass --image-scale dn (or dn-offset, l4s)"
            )
    out = values.astype(np.float32, copy=True)
    for i, b in enumerate(bands):
        if b in ("slope", "DEM"):
            continue
        if scale == "dn":
            out[i] /= 10000.0
        elif scale == "dn-offset":
            out[i] = (out[i] - 1000.0) / 10000.0
    return out


def read_chip(pair: ChipPair, spec: ChipSpec) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One chip as ``(image (C, H, W) float32 L4S model units, mask (H, W) uint8 0/1/IGNORE, bands)``."""
    grid = Grid.from_raster(pair.image)
    with RasterOnGrid(pair.image, grid, "nearest") as r:
        raw = r.read()
        file_bands = _file_bands(pair.image, r.count, spec, r.descriptions)
        kind = np.dtype(r.src_dtype).kind
    keep = [i for i, b in enumerate(file_bands) if b is not None and b in BANDS]
    dropped = [b for b in file_bands if b is not None and b not in BANDS]
    if dropped:
        warnings.warn(f"{pair.image}: {', '.join(dropped)} not used (not an L4S model band)", UserWarning, stacklevel=3)
    if not keep:
        raise UserError(f"{pair.image}: none of its bands is an L4S model band ({', '.join(BANDS)})")
    order = sorted(keep, key=lambda i: BANDS.index(file_bands[i]))  # type: ignore[arg-type]
    bands = [file_bands[i] for i in order]
    values = raw[order]
    if spec.image_scale == "l4s":
        image = values.astype(np.float32)
    else:
        image = to_model_units(_physical(values, bands, spec.image_scale, kind, pair.image), bands)  # type: ignore[arg-type]
    lab = read_raster(pair.label)
    if lab.grid != grid:
        raise UserError(
            f"{pair.label}: label grid {lab.grid.width}x{lab.grid.height} px in {lab.grid.crs} at "
            f"{tuple(lab.grid.transform)[:6]} "
            f"differs from its image {pair.image.name} ({grid.width}x{grid.height} px in {grid.crs} at "
            f"{tuple(grid.transform)[:6]}); labels must lie on their image's grid"
        )
    mapping = parse_label_map(spec.label_map)
    values_lab = lab.array
    present = np.unique(values_lab)
    nodata = lab.nodata
    unknown = [v for v in present.tolist() if v not in mapping and not (nodata is not None and v == nodata)]
    if unknown:
        raise UserError(
            f"{pair.label}: label value(s) {unknown[:8]} not in the label map {mapping}; map them with --label-map "
            "(e.g. 0:ignore,1:0,2:1)"
        )
    mask = np.full(values_lab.shape, IGNORE, dtype=np.uint8)
    for raw_value, target in mapping.items():
        mask[values_lab == raw_value] = target
    if nodata is not None:
        mask[values_lab == nodata] = IGNORE
    mask[~np.isfinite(image).all(axis=0)] = IGNORE
    return image, mask, tuple(bands)  # type: ignore[arg-type]


def _starts(length: int, tile: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, tile))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_chip(image: np.ndarray, mask: np.ndarray, tile: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut one chip into ``tile`` x ``tile`` patches (module docstring): overlaps and padding ignored."""
    c, h, w = image.shape
    ph, pw = max(0, tile - h), max(0, tile - w)
    if ph or pw:
        mode = "reflect" if h > ph and w > pw else "edge"
        image = np.pad(image, ((0, 0), (0, ph), (0, pw)), mode=mode)
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE)
    hh, ww = mask.shape
    covered = np.zeros((hh, ww), dtype=bool)
    out = []
    for y in _starts(hh, tile):
        for x in _starts(ww, tile):
            m = mask[y : y + tile, x : x + tile].copy()
            m[covered[y : y + tile, x : x + tile]] = IGNORE
            covered[y : y + tile, x : x + tile] = True
            if (m != IGNORE).any():
                out.append((image[:, y : y + tile, x : x + tile], m))
    return out


def load_chips(root: str | os.PathLike[str], spec: ChipSpec) -> PatchSet:
    """Every chip of ``root`` as tiled patches (module docstring); all bad files reported together.

    The patches hold the bands every chip has (in L4S order); ``groups`` is the chip index, ``paths`` the
    chip image of each patch.
    """
    pairs = list_chip_pairs(root)
    errors: list[str] = []
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    groups: list[int] = []
    paths: list[str] = []
    band_sets: list[tuple[str, ...]] = []
    for g, pair in enumerate(pairs):
        try:
            img, m, bands = read_chip(pair, spec)
        except UserError as exc:
            errors.append(one_line(exc))
            continue
        band_sets.append(bands)
        for ti, tm in tile_chip(img, m, spec.tile):
            images.append(ti)
            masks.append(tm)
            groups.append(g)
            paths.append(str(pair.image))
    if errors:
        raise UserError(errors_message(errors, str(root)))
    common = [b for b in BANDS if all(b in s for s in band_sets)]
    if not common:
        raise UserError(f"{root}: the chips share no band")
    if not images:
        raise UserError(f"{root}: no labelled pixel in any chip (check --label-map)")
    stacked = np.stack(
        [im[[bs.index(b) for b in common]] for im, bs in zip(images, [band_sets[g] for g in groups], strict=True)]
    ).astype(np.float32)
    return PatchSet(
        images=stacked,
        masks=np.stack(masks).astype(np.uint8),
        ids=np.arange(len(images), dtype=np.int64),
        paths=paths,
        bands=tuple(common),
        groups=np.asarray(groups, dtype=np.int64),
        gsd_m=_chips_gsd([p.image for p in pairs]),
    )


def _chips_gsd(paths: list[str]) -> float:
    """Median over the chips of the finer pixel side at the chip's centre, true metres (also for a geographic
    CRS); 10 (Sentinel-2's finest) when no chip carries a CRS."""
    sizes = []
    for path in paths:
        grid = Grid.from_raster(path)
        if grid.crs:
            sizes.append(min(float(v[grid.height // 2]) for v in pixel_size_m(grid)))
    return float(np.median(sizes)) if sizes else 10.0


def labelled_share(masks: np.ndarray) -> float:
    """Share of pixels that carry a label (not :data:`IGNORE`)."""
    m = np.asarray(masks)
    return float(np.count_nonzero(m != IGNORE)) / max(m.size, 1) if m.size else math.nan


__all__ = [
    "IMAGE_SCALES",
    "ChipPair",
    "ChipSpec",
    "is_chip_folder",
    "labelled_share",
    "list_chip_pairs",
    "load_chips",
    "parse_label_map",
    "read_chip",
    "tile_chip",
]
