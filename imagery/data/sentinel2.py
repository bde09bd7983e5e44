"""Sentinel-2 products on disk: which file holds which band, with which scale and offset, and the SCL classes.

:func:`open_scene` takes any of

* a **folder of per-band files** (GeoTIFF/COG/JPEG2000/VRT) named by band: ``B04.tif``,
  ``T33TUM_20180926T100031_B04_10m.jp2``, or Earth Search asset keys ``red.tif``, ``nir08.tif``, ``scl.tif``
  (any spelling :func:`imagery.data.bands.canonical_band` accepts, as a ``_``/``.``/``-``-separated token of
  the file name). A ``scene.json`` written by ``pipelines.fetch_scene``, or a STAC item JSON in the folder,
  supplies the date, id and scale/offset; the files themselves always come from the folder;
* an unzipped **.SAFE** product (L1C ``GRANULE/*/IMG_DATA/*_B04.jp2`` or L2A ``IMG_DATA/R10m|R20m|R60m``),
  its ``MTD_MSIL1C.xml``/``MTD_MSIL2A.xml`` giving the processing baseline, quantification value and offsets;
* a **multi-band GeoTIFF** with ``bands=`` naming its band order (``--bands B02,B03,B04,B08``);
* a **STAC item JSON** whose asset hrefs are local paths (absolute, or relative to the JSON), ``file://``,
  ``http(s)://`` (read through GDAL's ``/vsicurl/``) or ``s3://`` (``/vsis3/``) URLs. Asset keys of the
  three conventions met in practice are understood: Earth Search v1 (``red``, ``nir``, ``swir16`` ...),
  Earth Search v0 and Planetary Computer (``B04`` ...). JPEG2000 duplicates (``red-jp2``) are used only
  when no COG of the band exists. Planetary Computer hrefs need a signed URL to be read.

When a band has several files (an L2A SAFE has B02 at 10, 20 and 60 m), the finest one is used.
Georeferencing always comes from each file itself, never from metadata (``proj:shape`` etc.).

Digital numbers to reflectance (``reflectance = DN * scale + offset``), first match wins:

1. ``image_scale`` given by the user: ``reflectance`` (scale 1), ``dn`` (1e-4, offset 0), ``dn-offset``
   (1e-4, offset -0.1: DN - 1000 of processing baseline 04.00 and later);
2. STAC ``raster:bands`` ``scale``/``offset`` of the asset (also stored in ``scene.json``);
3. the product's processing baseline (SAFE metadata, ``s2:processing_baseline``): 1 / quantification
   value (10000), offset ``BOA_ADD_OFFSET``/``RADIO_ADD_OFFSET`` / 10000 from the SAFE metadata, else
   -0.1 for baseline >= 04.00 (0 when ``earthsearch:boa_offset_applied`` says it was removed already);
4. GDAL scale/offset tags of a multi-band GeoTIFF;
5. otherwise 1e-4 and 0, reported (``scale_source = "assumed"``): a folder without metadata may be a
   baseline >= 04.00 product, then pass ``--image-scale dn-offset``.

Scene classification (L2A ``SCL``, :data:`SCL_CLASSES`): :data:`SCL_MASKED` (no data, saturated or
defective, cloud shadow, cloud medium/high probability, thin cirrus, and snow/ice, which is documented as
masked because a snow-covered slope cannot show a landslide scar) become nodata in every output, with
their share reported per reason (:data:`SCL_REASONS`); dark areas (2; topographic shadow on steep slopes,
where landslides are) and water stay valid.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.cli import InputNotFoundError, UserError, one_line
from common.geo import Grid, RasterOnGrid
from imagery.data.bands import KNOWN_BANDS, SCENE_SCALES, canonical_band

SCL_CLASSES: dict[int, str] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area",
    3: "cloud_shadow",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow_ice",
}
#: SCL classes masked by default (module docstring).
SCL_MASKED: tuple[int, ...] = (0, 1, 3, 8, 9, 10, 11)
#: The reason reported for each masked SCL class.
SCL_REASONS: dict[int, str] = {
    0: "nodata",
    1: "saturated",
    3: "cloud_shadow",
    8: "cloud",
    9: "cloud",
    10: "cloud",
    11: "snow",
}
DN_SCALE = 1e-4
#: Reflectance offset of L2A processing baseline 04.00 and later (BOA_ADD_OFFSET -1000 in digital numbers).
BASELINE_04_OFFSET = -0.1
SCENE_JSON = "scene.json"

_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
_TOKEN_RE = re.compile(r"[_.\-\s]+")
_S2_BANDS = tuple(b for b in KNOWN_BANDS if b not in ("slope", "DEM"))
# MTD band ids 0..12 (physical band order of the SAFE metadata)
_MTD_BAND_IDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


@dataclass(frozen=True)
class BandFile:
    """Where one band lives: ``path`` (a file or a GDAL path such as ``/vsicurl/...``), its 1-based band
    ``index`` in that file, and ``reflectance = value * scale + offset`` (SCL: classes, scale 1)."""

    band: str
    path: str
    index: int = 1
    scale: float = DN_SCALE
    offset: float = 0.0


@dataclass(frozen=True)
class SceneSource:
    """A Sentinel-2 scene found on disk (see :func:`open_scene`).

    ``files`` maps canonical band names (``B2`` ... ``B12``, ``B8A``, ``SCL``) to :class:`BandFile`;
    ``scale_source`` says where the scale/offset came from (module docstring).
    """

    source: str
    kind: str
    scene_id: str
    date: str | None
    product: str
    processing_baseline: str | None
    files: dict[str, BandFile]
    scale_source: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def bands(self) -> tuple[str, ...]:
        """The spectral bands found (canonical, L4S order then B8A), without SCL."""
        return tuple(b for b in _S2_BANDS if b in self.files and b != "SCL")

    @property
    def has_scl(self) -> bool:
        return "SCL" in self.files

    def describe_bands(self) -> str:
        return ", ".join([*self.bands, *(["SCL"] if self.has_scl else [])]) or "none"


# ----------------------------------------------------------------------------- names
def band_from_name(name: str) -> str | None:
    """The Sentinel-2 band a file name or asset key names (``B04``, ``..._B8A_20m``, ``red``, ``scl``), or None."""
    stem = name
    for sfx in _RASTER_SUFFIXES:
        if stem.lower().endswith(sfx):
            stem = stem[: -len(sfx)]
    found = None
    tokens = _TOKEN_RE.split(stem)
    for tok in tokens:
        if not tok:
            continue
        try:
            band = canonical_band(tok)
        except UserError:
            continue
        if band in _S2_BANDS:
            found = band
    return found


def href_to_path(href: str, base: Path) -> str:
    """A GDAL-readable path for a STAC href: local (relative to ``base``), ``file://``, ``/vsicurl/`` or ``/vsis3/``."""
    if href.startswith("file://"):
        return href[len("file://") :]
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    if href.startswith("s3://"):
        return f"/vsis3/{href[len('s3://') :]}"
    if href.startswith("/vsi") or os.path.isabs(href):
        return href
    return str((base / href).resolve())


def _finer(a: str, b: str) -> str:
    """The path with the smaller pixel (the finer band file)."""
    try:
        ra, rb = Grid.from_raster(a).res[0], Grid.from_raster(b).res[0]
    except UserError:
        return a
    return a if ra <= rb else b


def _date_in(text: str, pattern: str) -> str | None:
    """``YYYY-MM-DD`` from the first ``YYYYMMDD`` that ``pattern`` (its group 1) finds in ``text``, or None."""
    m = re.search(pattern, text)
    return f"{m.group(1)[:4]}-{m.group(1)[4:6]}-{m.group(1)[6:]}" if m else None


def _baseline_offset(baseline: str | None, applied: bool = False) -> float:
    if applied or not baseline:
        return 0.0
    try:
        return BASELINE_04_OFFSET if float(baseline) >= 4.0 else 0.0
    except ValueError:
        return 0.0


def _with_scale(files: dict[str, str], scale: float, offset: float | dict[str, float]) -> dict[str, BandFile]:
    out = {}
    for band, path in files.items():
        if band == "SCL":
            out[band] = BandFile(band, path, 1, 1.0, 0.0)
        else:
            off = offset.get(band, 0.0) if isinstance(offset, dict) else offset
            out[band] = BandFile(band, path, 1, scale, off)
    return out


def _override(files: dict[str, BandFile], image_scale: str) -> dict[str, BandFile]:
    scale, offset = {"reflectance": (1.0, 0.0), "dn": (DN_SCALE, 0.0), "dn-offset": (DN_SCALE, BASELINE_04_OFFSET)}[
        image_scale
    ]
    return {b: (f if b == "SCL" else BandFile(f.band, f.path, f.index, scale, offset)) for b, f in files.items()}


# ----------------------------------------------------------------------------- STAC items
def read_item_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A STAC item (or a one-item FeatureCollection) from a JSON file; one-line errors."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputNotFoundError(f"{p}: STAC item file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{p}: not valid JSON ({one_line(exc)[:120]})") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        feats = data.get("features") or []
        if len(feats) != 1:
            raise UserError(
                f"{p}: an item collection of {len(feats)} items; pass one item (or use fetch_scene --items)"
            )
        data = feats[0]
    if not isinstance(data, dict) or data.get("type") != "Feature" or not isinstance(data.get("assets"), dict):
        raise UserError(f"{p}: expected a STAC item (type Feature with assets)")
    return data


def item_band_assets(item: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{band: (asset_key, asset)}`` of an item's band assets (COG preferred over JPEG2000 duplicates)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, asset in item.get("assets", {}).items():
        if not isinstance(asset, dict) or "href" not in asset:
            continue
        jp2 = key.lower().endswith("-jp2") or str(asset.get("href", "")).lower().endswith(".jp2")
        base = key[:-4] if key.lower().endswith("-jp2") else key
        band = band_from_name(base) if base.lower() not in ("visual", "tci", "aot", "wvp", "thumbnail") else None
        if band is None:
            names = [b.get("name", "") for b in asset.get("eo:bands", []) if isinstance(b, dict)]
            band = band_from_name(names[0]) if len(names) == 1 else None
        if band is None:
            continue
        if band in out and jp2:
            continue
        out[band] = (key, asset)
    return out


def item_scale(asset: dict[str, Any], props: dict[str, Any]) -> tuple[float, float, str]:
    """``(scale, offset, where from)`` of a STAC band asset (module docstring, rules 2-3 and 5)."""
    rb = asset.get("raster:bands")
    if isinstance(rb, list) and rb and isinstance(rb[0], dict) and "scale" in rb[0]:
        return float(rb[0].get("scale", DN_SCALE)), float(rb[0].get("offset", 0.0)), "stac raster:bands"
    baseline = props.get("s2:processing_baseline")
    applied = bool(props.get("earthsearch:boa_offset_applied", False))
    if baseline:
        return DN_SCALE, _baseline_offset(str(baseline), applied), f"processing baseline {baseline}"
    return DN_SCALE, 0.0, "assumed"


def scene_from_item(item: dict[str, Any], base: Path, source: str, kind: str = "stac-item") -> SceneSource:
    """A :class:`SceneSource` from a STAC item dict; relative hrefs are resolved against ``base``."""
    props = item.get("properties", {}) or {}
    files: dict[str, BandFile] = {}
    sources = set()
    for band, (_key, asset) in item_band_assets(item).items():
        path = href_to_path(str(asset["href"]), base)
        if band == "SCL":
            files[band] = BandFile(band, path, 1, 1.0, 0.0)
            continue
        scale, offset, src = item_scale(asset, props)
        sources.add(src)
        files[band] = BandFile(band, path, 1, scale, offset)
    if not files:
        raise UserError(f"{source}: the STAC item {item.get('id')} has no Sentinel-2 band assets")
    product = "L2A" if "l2a" in str(item.get("collection", "")).lower() or "SCL" in files else "L1C"
    return SceneSource(
        source=source,
        kind=kind,
        scene_id=str(item.get("id", Path(source).stem)),
        date=str(props.get("datetime") or "")[:10] or None,
        product=product,
        processing_baseline=props.get("s2:processing_baseline"),
        files=files,
        scale_source=", ".join(sorted(sources)) or "assumed",
        metadata={
            "eo:cloud_cover": props.get("eo:cloud_cover"),
            "collection": item.get("collection"),
            "synthetic": bool(props.get("synthetic")),  # as a folder's scene.json says it: only when marked
        },
    )


# ----------------------------------------------------------------------------- SAFE
def _safe_metadata(root: Path) -> dict[str, Any]:
    mtd = next(iter(sorted(root.glob("MTD_MSI*.xml"))), None)
    if mtd is None:
        return {}
    try:
        tree = ET.parse(mtd)
    except ET.ParseError as exc:
        raise UserError(f"{mtd}: unreadable product metadata ({one_line(exc)})") from None
    out: dict[str, Any] = {"mtd": str(mtd)}
    offsets: dict[str, float] = {}
    for el in tree.iter():
        tag = el.tag.split("}")[-1]
        text = (el.text or "").strip()
        if tag == "PROCESSING_BASELINE":
            out["baseline"] = text
        elif tag == "PRODUCT_START_TIME":
            out["date"] = text[:10]
        elif tag == "PRODUCT_TYPE":
            out["product_type"] = text
        elif tag in ("BOA_QUANTIFICATION_VALUE", "QUANTIFICATION_VALUE"):
            out["quantification"] = float(text)
        elif tag in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET"):
            bid = int(el.get("band_id", "-1"))
            if 0 <= bid < len(_MTD_BAND_IDS):
                offsets[_MTD_BAND_IDS[bid]] = float(text)
    out["offsets"] = offsets
    return out


def _band_files(paths: Iterable[Path]) -> dict[str, str]:
    """``{band: path}`` of the raster files among ``paths`` named after a band (the finest file per band)."""
    found: dict[str, str] = {}
    for p in sorted(paths):
        if p.suffix.lower() not in _RASTER_SUFFIXES or not p.is_file():
            continue
        band = band_from_name(p.name)
        if band is not None:
            found[band] = _finer(found[band], str(p)) if band in found else str(p)
    return found


def scene_from_safe(root: Path) -> SceneSource:
    """A :class:`SceneSource` of an unzipped ``.SAFE`` product (L1C or L2A)."""
    found = _band_files(root.glob("GRANULE/*/IMG_DATA/**/*"))
    if not found:
        raise UserError(f"{root}: no band files under GRANULE/*/IMG_DATA (expected *_B04.jp2 or R10m/*_B04_10m.jp2)")
    meta = _safe_metadata(root)
    quant = float(meta.get("quantification", 10000.0))
    baseline = meta.get("baseline")
    mtd_offsets = meta.get("offsets") or {}
    if mtd_offsets:
        offsets: float | dict[str, float] = {b: v / quant for b, v in mtd_offsets.items()}
        src = f"product metadata (baseline {baseline})"
    else:
        offsets = _baseline_offset(baseline)
        src = f"processing baseline {baseline}" if baseline else "assumed"
    name = root.name[: -len(".SAFE")] if root.name.upper().endswith(".SAFE") else root.name
    product = "L2A" if "MSIL2A" in name.upper() or "SCL" in found else "L1C"
    date = meta.get("date")
    if date is None:
        date = _date_in(name, r"_(\d{8})T\d{6}_")
    return SceneSource(
        source=str(root),
        kind="safe",
        scene_id=name,
        date=date,
        product=product,
        processing_baseline=baseline,
        files=_with_scale(found, 1.0 / quant, offsets),
        scale_source=src,
    )


# ----------------------------------------------------------------------------- folders
def _folder_metadata(root: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(scene.json, STAC item)`` found in a band folder (either may be None)."""
    scene_json = None
    if (root / SCENE_JSON).is_file():
        try:
            scene_json = json.loads((root / SCENE_JSON).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{root / SCENE_JSON}: not valid JSON ({one_line(exc)[:120]})") from None
    item = None
    for p in sorted(root.glob("*.json")):
        if p.name == SCENE_JSON:
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and data.get("type") == "Feature" and isinstance(data.get("assets"), dict):
            item = data
            break
    return scene_json, item


def scene_from_folder(root: Path) -> SceneSource:
    """A :class:`SceneSource` of a folder of per-band files (module docstring)."""
    found = _band_files(root.iterdir())
    if not found:
        names = ", ".join(sorted(p.name for p in root.iterdir())[:10]) or "nothing"
        raise UserError(
            f"{root}: no band files found (expected names such as B04.tif, T33TUM_20180926T100031_B04_10m.jp2 or "
            f"red.tif; found {names})"
        )
    scene_json, item = _folder_metadata(root)
    if scene_json is not None:
        bands_meta = scene_json.get("bands", {})
        files = {}
        for band, path in found.items():
            bm = bands_meta.get(band, {})
            if band == "SCL":
                files[band] = BandFile(band, path, 1, 1.0, 0.0)
            else:
                files[band] = BandFile(band, path, 1, float(bm.get("scale", DN_SCALE)), float(bm.get("offset", 0.0)))
        return SceneSource(
            source=str(root),
            kind="folder",
            scene_id=str(scene_json.get("id") or root.name),
            date=scene_json.get("date"),
            product=str(scene_json.get("product", "L2A")),
            processing_baseline=scene_json.get("processing_baseline"),
            files=files,
            scale_source=f"{SCENE_JSON}",
            metadata={"eo:cloud_cover": scene_json.get("cloud_cover"), "synthetic": bool(scene_json.get("synthetic"))},
        )
    if item is not None:
        from_item = scene_from_item(item, root, str(root), kind="folder")
        files = {}
        for band, path in found.items():
            ref = from_item.files.get(band)
            scale, offset = (ref.scale, ref.offset) if ref is not None else (DN_SCALE, 0.0)
            files[band] = BandFile(band, path, 1, 1.0 if band == "SCL" else scale, 0.0 if band == "SCL" else offset)
        return SceneSource(
            source=str(root),
            kind="folder",
            scene_id=from_item.scene_id,
            date=from_item.date,
            product=from_item.product,
            processing_baseline=from_item.processing_baseline,
            files=files,
            scale_source=f"STAC item in the folder ({from_item.scale_source})",
            metadata=from_item.metadata,
        )
    return SceneSource(
        source=str(root),
        kind="folder",
        scene_id=root.name,
        date=_date_in(" ".join(found.values()), r"(\d{8})T\d{6}"),
        product="L2A" if "SCL" in found else "unknown",
        processing_baseline=None,
        files=_with_scale(found, DN_SCALE, 0.0),
        scale_source="assumed",
    )


def scene_from_geotiff(path: Path, bands: Sequence[str]) -> SceneSource:
    """A :class:`SceneSource` of a multi-band GeoTIFF whose band order is ``bands``."""
    grid = Grid.from_raster(path)
    with RasterOnGrid(path, grid, "nearest") as r:
        count = r.count
        scales, offsets = r.scales, r.offsets
    names = [canonical_band(b) for b in bands]
    if len(names) != count:
        raise UserError(f"{path}: has {count} band(s) but --bands names {len(names)} ({','.join(bands)})")
    dup = sorted({b for b in names if names.count(b) > 1})
    if dup:
        raise UserError(f"--bands {','.join(bands)}: {', '.join(dup)} named more than once")
    tagged = any(s not in (None, 1.0) or o not in (None, 0.0) for s, o in zip(scales, offsets, strict=True))
    files = {}
    for i, band in enumerate(names, start=1):
        if band in ("slope", "DEM"):
            raise UserError(f"--bands {','.join(bands)}: {band} comes from --dem, not from the scene file")
        if band == "SCL":
            files[band] = BandFile(band, str(path), i, 1.0, 0.0)
        elif tagged:
            files[band] = BandFile(band, str(path), i, float(scales[i - 1] or 1.0), float(offsets[i - 1] or 0.0))
        else:
            files[band] = BandFile(band, str(path), i, DN_SCALE, 0.0)
    return SceneSource(
        source=str(path),
        kind="geotiff",
        scene_id=path.stem,
        date=_date_in(path.name, r"(\d{8})T?\d{0,6}"),
        product="L2A" if "SCL" in files else "unknown",
        processing_baseline=None,
        files=files,
        scale_source="GeoTIFF scale/offset tags" if tagged else "assumed",
    )


def open_scene(
    path: str | os.PathLike[str], *, bands: Sequence[str] | None = None, image_scale: str = "auto"
) -> SceneSource:
    """Find the bands of a Sentinel-2 scene (module docstring); ``bands`` names a multi-band GeoTIFF's bands."""
    if image_scale not in SCENE_SCALES:
        raise UserError(f"--image-scale must be one of {', '.join(SCENE_SCALES)}; got {image_scale!r}")
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"--scene {p}: not found (expected a band folder, a .SAFE, a GeoTIFF or a STAC item)")
    if p.is_dir():
        if bands:
            warnings.warn(
                "--bands is only used for a multi-band GeoTIFF; ignored for a folder", UserWarning, stacklevel=2
            )
        if p.name.upper().endswith(".SAFE") or (p / "GRANULE").is_dir():
            scene = scene_from_safe(p)
        else:
            scene = scene_from_folder(p)
    elif p.suffix.lower() == ".json":
        scene = scene_from_item(read_item_json(p), p.parent, str(p))
    elif p.suffix.lower() in (".tif", ".tiff", ".vrt", ".jp2"):
        if not bands:
            raise UserError(
                f"--scene {p}: a multi-band raster needs --bands naming its band order (e.g. B02,B03,B04,B08)"
            )
        scene = scene_from_geotiff(p, bands)
    else:
        raise UserError(f"--scene {p}: expected a band folder, a .SAFE folder, a GeoTIFF or a STAC item .json")
    if image_scale != "auto":
        scene = replace(scene, files=_override(scene.files, image_scale), scale_source=f"--image-scale {image_scale}")
    return scene


__all__ = [
    "BASELINE_04_OFFSET",
    "SCENE_SCALES",
    "SCL_CLASSES",
    "SCL_MASKED",
    "SCL_REASONS",
    "BandFile",
    "SceneSource",
    "band_from_name",
    "href_to_path",
    "item_scale",
    "item_band_assets",
    "open_scene",
    "read_item_json",
    "scene_from_folder",
    "scene_from_geotiff",
    "scene_from_item",
    "scene_from_safe",
]
