"""Temporal channel sets of Sen12Landslides patches: a folder of ``<region>_<sensor>_<id>.nc`` -> a :class:`PatchSet`.

One training patch per Sentinel-2 file ``<region>_s2_<id>.nc`` (its Sentinel-1 twins ``<region>_s1asc_<id>.nc`` /
``<region>_s1dsc_<id>.nc`` beside it; or ``pipelines.fetch_dataset``'s layout ``s2/``, ``s1asc/``, ``s1dsc/``).
Channels, named ``<source>@<when>`` (``@`` marks a temporal channel: such a model takes these channels as they
are, with no L4S feature engineering; ``imagery.transforms.features``):

``--temporal`` (what in time):

* ``post``: the post-event composite (per-pixel median over the clear steps on or after ``event_date``);
* ``pre-post``: the pre-event composite then the post-event one;
* ``pre-post-diff``: both, then their differences (post - pre) and, for S2, ``NDVI@diff`` (dNDVI, post - pre).

``--sensor`` (which source): ``s2`` (B02..B12 reflectance 0..1, ``B02@post`` ...), ``s1`` (``VV_dB`` / ``VH_dB``
backscatter in dB; the difference of two dB medians is the log-ratio, named ``VV@logratio``), ``s2+s1`` (S2 channels
then S1 channels). S1 values that are all >= 0 are read as linear power and converted (10 log10); otherwise they are
already dB; an exact 0.0 is nodata. The ascending and descending twins are pooled (their dates together) into one
median. Every set ends with ``slope`` (degrees, Horn's method on the patch DEM, ``common.geo.terrain.slope``, as L4S
carries one). A pixel with no clear step gets the channel's median over the patch (0 when none), so no NaN reaches a
model; :func:`temporal_channels` reports the share so filled.

What the loader looks for (used only when present), in the data folder ``<data>`` and in the dataset's task
folders ``<data>/<task>/<sensor>/`` and ``<data>/tasks/<task>/<sensor>/`` (``task`` default ``S12LS-LD``, the
landslide-detection task; ``<sensor>`` ``s2``, or ``s1asc`` for ``--sensor s1``):

* task splits, the published format (github.com/PaulH97/Sen12Landslides, checked 2026-12): ``data_paths.json`` or
  ``splits.json``, ``{"train": [path, ...], "val": [...], "test": [...]}``, matched by file name (``validation``
  is read as ``val``); or one name per line in ``<split>.txt`` / ``splits/<split>.txt`` (an S2 file name, its stem,
  or ``<region>_<id>``). Without any split file every patch is used;
* norm statistics, the published format: ``norm_data.json`` or ``norm.json``, ``{"mean": [...], "std": [...]}`` in
  the file's band order (S2: B02..B12 then DEM, as stored, 0..10000: divided by 10000 to match the reflectance
  channels; S1: VV, VH, DEM in linear power, which the dB channels cannot use: not applied, with a warning); or
  ``{"<band>": {"mean": m, "std": s}}`` in the channels' own units (``norm_stats.json`` too). A composite channel
  of a band becomes ``(x - mean) / std``, a difference ``x / std``. Bands without statistics stay in physical units.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from common.cli import UserError
from imagery.data.bands import SENSORS, TEMPORAL_MARK, TEMPORAL_SETS, is_temporal_band_set
from imagery.data.patches import PatchSet
from imagery.data.sen12landslides import (
    S1_BANDS,
    S2_BANDS,
    S2_REFLECTANCE_SCALE,
    Sen12LandslidesS1,
    Sen12LandslidesS2,
    Sen12Patch,
)

__all__ = ["TEMPORAL_MARK", "is_temporal_band_set", "load_sen12_temporal", "temporal_channels"]

NORM_FILES: tuple[str, ...] = ("norm_data.json", "norm.json", "norm_stats.json")
SPLIT_FILES: tuple[str, ...] = ("data_paths.json", "splits.json")
DEFAULT_TASK = "S12LS-LD"
_SPLIT_ALIASES = {"validation": "val", "valid": "val"}
_S2_NAME = re.compile(r"^(?P<region>.+)_s2_(?P<id>[^_]+)\.nc$", re.IGNORECASE)


def is_sen12_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder holding at least one ``*_s2_*.nc`` file."""
    p = Path(path)
    return p.is_dir() and any(_S2_NAME.match(f.name) for f in (*p.glob("*.nc"), *p.glob("s2/*.nc")))


def check_choice(temporal: str, sensor: str) -> None:
    """One-line :class:`UserError` for an unknown ``--temporal`` or ``--sensor``."""
    if temporal not in TEMPORAL_SETS:
        raise UserError(f"--temporal must be one of {', '.join(TEMPORAL_SETS)}; got {temporal!r}")
    if sensor not in SENSORS:
        raise UserError(f"--sensor must be one of {', '.join(SENSORS)}; got {sensor!r}")


def _s1_db(patch: Sen12Patch, band: str) -> np.ndarray:
    a = np.asarray(patch.bands[band], dtype=np.float32).copy()
    a[a == 0.0] = np.nan
    finite = a[np.isfinite(a)]
    if finite.size and finite.min() >= 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            a = 10.0 * np.log10(a)
        a[~np.isfinite(a)] = np.nan
    return a


def _median(stack: np.ndarray) -> np.ndarray:
    out = np.full(stack.shape[1:], np.nan, dtype=np.float32)
    seen = np.isfinite(stack).any(axis=0)
    if seen.any():
        out[seen] = np.nanmedian(stack[:, seen], axis=0)
    return out


def temporal_channels(
    s2: Sen12Patch | None,
    s1: list[Sen12Patch],
    temporal: str,
    sensor: str,
    norm: dict[str, dict[str, float]] | None = None,
) -> tuple[np.ndarray, tuple[str, ...], float]:
    """The channels of one patch: ``(C, H, W)`` float32 without NaN, their names, and the share of values filled
    (pixels with no clear observation). ``s2`` is needed for ``s2``/``s2+s1``, ``s1`` (one or more orbits) for
    ``s1``/``s2+s1``; ``norm`` as in the module docstring."""
    check_choice(temporal, sensor)
    norm = norm or {}
    names: list[str] = []
    arrays: list[np.ndarray] = []

    def add(source: str, pre: np.ndarray, post: np.ndarray, diff_name: str) -> None:
        a, n = _source_channels(source, pre, post, diff_name, temporal, norm)
        arrays.extend(a)
        names.extend(n)

    ref = s2 if s2 is not None else (s1[0] if s1 else None)
    if ref is None:
        raise UserError("temporal channels need a Sentinel-2 or Sentinel-1 patch")
    if "s2" in sensor.split("+"):
        if s2 is None:
            raise UserError(f"--sensor {sensor}: no Sentinel-2 patch")
        _need_event(s2)
        needs = (*S2_BANDS, "NDVI") if temporal == "pre-post-diff" else S2_BANDS
        a, n = s2_channels(
            {b: s2.composite(b, s2.pre) for b in needs}, {b: s2.composite(b, s2.post) for b in needs}, temporal, norm
        )
        arrays.extend(a)
        names.extend(n)
    if "s1" in sensor.split("+"):
        if not s1:
            raise UserError(f"--sensor {sensor}: no Sentinel-1 twin (<region>_s1asc_<id>.nc / _s1dsc_) of {ref.path}")
        for p in s1:
            _need_event(p)
            if p.grid.shape != ref.grid.shape:
                raise UserError(f"{p.path}: grid {p.grid.shape} differs from {ref.path}'s {ref.grid.shape}")
        for b in S1_BANDS:
            pre = _median(np.concatenate([_s1_db(p, b)[p.pre] for p in s1]))
            post = _median(np.concatenate([_s1_db(p, b)[p.post] for p in s1]))
            add(f"{b}_dB", pre, post, b)
    arrays.append(_slope(ref))
    names.append("slope")
    stack, filled = fill_missing(np.stack(arrays).astype(np.float32))
    return stack, tuple(names), filled


def _source_channels(
    source: str,
    pre: np.ndarray,
    post: np.ndarray,
    diff_name: str,
    temporal: str,
    norm: dict[str, dict[str, float]],
) -> tuple[list[np.ndarray], list[str]]:
    """The channels of one source (an S2 band or an S1 polarisation in dB): ``<source>@pre`` / ``@post`` as
    ``--temporal`` asks, normalised by the band's statistics, then ``<diff_name>@diff`` (``@logratio`` for S1)."""
    stats = norm.get(source.split("_")[0], {})
    mean, std = float(stats.get("mean", 0.0)), float(stats.get("std", 1.0)) or 1.0
    comps = {"pre": pre, "post": post}
    whens = ("post",) if temporal == "post" else ("pre", "post")
    arrays = [(comps[w] - mean) / std for w in whens]
    names = [f"{source}@{w}" for w in whens]
    if temporal == "pre-post-diff":
        arrays.append((post - pre) / std)
        names.append(f"{diff_name}@{'logratio' if diff_name in S1_BANDS else 'diff'}")
    return arrays, names


def s2_channels(
    pre: Mapping[str, np.ndarray],
    post: Mapping[str, np.ndarray],
    temporal: str,
    norm: dict[str, dict[str, float]] | None = None,
    bands: Sequence[str] = S2_BANDS,
) -> tuple[list[np.ndarray], list[str]]:
    """The Sentinel-2 channels of a temporal set from pre- and post-event composites (the one home of that rule,
    used for training here and by ``pipelines.map_event`` on its event composites).

    ``pre`` / ``post``: ``{band: (H, W) reflectance}`` per-pixel medians of the clear observations of each window,
    keyed by the Sen12Landslides names of ``bands`` (``B04``...), plus ``"NDVI"`` (the median of each date's NDVI)
    for ``pre-post-diff``; ``pre`` may be empty for ``post``. Returns the channels (NaN kept where a composite is)
    and their names, in the order :func:`temporal_channels` gives them (slope not included)."""
    arrays: list[np.ndarray] = []
    names: list[str] = []
    for b in bands:
        a, n = _source_channels(b, pre.get(b, post[b]), post[b], b, temporal, norm or {})
        arrays.extend(a)
        names.extend(n)
    if temporal == "pre-post-diff":
        arrays.append(post["NDVI"] - pre["NDVI"])
        names.append("NDVI@diff")
    return arrays, names


def fill_missing(stack: np.ndarray) -> tuple[np.ndarray, float]:
    """``stack`` ``(C, H, W)`` with each channel's non-finite values replaced by the channel's median (0 when it
    has none), in place, and the share so filled: a pixel with no clear step reaches no model as NaN."""
    bad = ~np.isfinite(stack)
    for c in np.flatnonzero(bad.any(axis=(1, 2))):
        finite = stack[c][np.isfinite(stack[c])]
        stack[c][bad[c]] = float(np.median(finite)) if finite.size else 0.0
    return stack, float(bad.mean())


def _need_event(p: Sen12Patch) -> None:
    if p.event_date is None or len(p.post) == 0:
        raise UserError(f"{p.path}: no event_date or no step on or after it; a temporal set needs both")


def _slope(p: Sen12Patch) -> np.ndarray:
    from common.geo.terrain import slope  # noqa: PLC0415

    if p.dem is None:
        raise UserError(f"{p.path}: no DEM variable; the temporal sets end with the slope")
    t = p.grid.transform
    return np.asarray(slope(np.asarray(p.dem, dtype=np.float64), abs(t.e), abs(t.a)), dtype=np.float32)


def _task_dirs(root: Path, task: str, sensor: str) -> list[Path]:
    """Where split and norm files are looked for, first match wins: the data folder, then the task folders."""
    sub = "s2" if "s2" in sensor.split("+") else "s1asc"
    return [root, root / task / sub, root / "tasks" / task / sub]


def _split_keys(dirs: list[Path], split: str) -> set[str] | None:
    for d in dirs:
        for name in SPLIT_FILES:
            f = d / name
            if f.is_file():
                try:
                    table = json.loads(f.read_text())
                    paths = table[_SPLIT_ALIASES.get(split, split)]
                except (ValueError, KeyError, TypeError):
                    raise UserError(
                        f"{f}: expected {{'train': [...], 'val': [...], 'test': [...]}} with {split!r}"
                    ) from None
                return {Path(str(p)).name for p in paths} | {Path(str(p)).stem for p in paths}
        for f in (d / f"{split}.txt", d / "splits" / f"{split}.txt"):
            if f.is_file():
                keys = {ln.strip() for ln in f.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
                return {Path(k).stem for k in keys} | keys
        if (d / "splits").is_dir():
            raise UserError(f"{d / 'splits'}: no {split}.txt for --split {split}")
    return None


def _norm_from_lists(f: Path, data: dict) -> dict[str, dict[str, float]]:
    """The published ``{"mean": [...], "std": [...]}`` in stored band order -> per-band stats in channel units."""
    mean, std = [float(v) for v in data["mean"]], [float(v) for v in data["std"]]
    if len(mean) != len(std):
        raise ValueError("mean and std differ in length")
    if len(mean) in (len(S2_BANDS), len(S2_BANDS) + 1):  # B02..B12 (+ DEM), stored as reflectance x 10000
        scale = S2_REFLECTANCE_SCALE
        return {b: {"mean": mean[i] / scale, "std": std[i] / scale} for i, b in enumerate(S2_BANDS)}
    if len(mean) in (len(S1_BANDS), len(S1_BANDS) + 1):
        warnings.warn(
            f"{f}: Sentinel-1 statistics are in linear power; the S1 channels are in dB, so they stay unnormalised",
            UserWarning,
            stacklevel=3,
        )
        return {}
    raise ValueError(f"{len(mean)} values match neither the S2 ({len(S2_BANDS)}) nor the S1 ({len(S1_BANDS)}) bands")


def _norm(dirs: list[Path]) -> dict[str, dict[str, float]]:
    for d in dirs:
        for name in NORM_FILES:
            f = d / name
            if f.is_file():
                try:
                    data = json.loads(f.read_text())
                    if isinstance(data.get("mean"), list):
                        return _norm_from_lists(f, data)
                    return {str(k): {"mean": float(v["mean"]), "std": float(v["std"])} for k, v in data.items()}
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise UserError(
                        f"{f}: expected {{'mean': [...], 'std': [...]}} or {{band: {{'mean': m, 'std': s}}}} ({exc})"
                    ) from None
    return {}


def load_sen12_temporal(
    root: str | os.PathLike[str],
    temporal: str = "post",
    sensor: str = "s2",
    split: str = "train",
    task: str = DEFAULT_TASK,
) -> PatchSet:
    """The labelled patches of a Sen12Landslides folder as channel-first float32 images ``(N, C, H, W)`` (channels
    named in :attr:`PatchSet.bands`) and their masks ``(N, H, W)`` uint8 0/1; ids are the file ids when numeric,
    else positions. Split files and norm statistics as in the module docstring."""
    check_choice(temporal, sensor)
    r = Path(root)
    s2_dir = r / "s2" if (r / "s2").is_dir() else r  # pipelines.fetch_dataset's layout: s2/, s1asc/, s1dsc/
    files = sorted(f for f in s2_dir.glob("*.nc") if _S2_NAME.match(f.name))
    if not files:
        raise UserError(f"{r}: no Sentinel-2 patch <region>_s2_<id>.nc")
    dirs = _task_dirs(r, task, sensor)
    keys = _split_keys(dirs, split)
    if keys is not None:
        files = [f for f in files if {f.name, f.stem, f.stem.replace("_s2_", "_")} & keys]
        if not files:
            raise UserError(f"{r}: the {split} split file names none of the patches here")
    norm = _norm(dirs)
    images, masks, ids, names_seen, gsd = [], [], [], None, 10.0
    for i, f in enumerate(files):
        m = _S2_NAME.match(f.name)
        assert m is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pre_post_dates disagreements: recorded on the patch
            s2 = Sen12LandslidesS2()(f) if "s2" in sensor.split("+") else None
            s1 = []
            if "s1" in sensor.split("+"):
                for orbit in ("s1asc", "s1dsc"):
                    for folder in (s2_dir, r / orbit):
                        twin = folder / f"{m['region']}_{orbit}_{m['id']}.nc"
                        if twin.is_file():
                            s1.append(Sen12LandslidesS1()(twin))
                            break
                if not s1:
                    raise UserError(
                        f"{f}: --sensor {sensor} needs its Sentinel-1 twin {m['region']}_s1asc_{m['id']}.nc or "
                        f"{m['region']}_s1dsc_{m['id']}.nc beside it (no Sentinel-1 twin found)"
                    )
        img, names, _ = temporal_channels(s2, s1, temporal, sensor, norm)
        ref = s2 if s2 is not None else s1[0]
        if ref.mask is None:
            raise UserError(f"{ref.path}: no MASK variable; training needs labelled patches")
        if names_seen is not None and names != names_seen:
            raise UserError(f"{f}: channels {names} differ from the first patch's {names_seen}")
        names_seen = names
        gsd = float(abs(ref.grid.transform.a))
        images.append(img)
        masks.append((np.asarray(ref.mask) > 0).astype(np.uint8))
        ids.append(int(m["id"]) if m["id"].isdigit() else i)
    if len(set(ids)) != len(ids):
        ids = list(range(len(ids)))
    return PatchSet(
        images=np.stack(images),
        masks=np.stack(masks),
        ids=np.asarray(ids),
        paths=[str(f) for f in files],
        bands=names_seen or (),
        gsd_m=gsd,
        channel_norm=norm,
    )
