"""The assessment report: one self-contained HTML page, and the scene's RGB as a PNG in lon/lat.

:func:`write_report` writes ``report.html``: a map (Leaflet, inlined from the copy shipped in
``service/static/vendor``, so the file opens offline and needs no CDN) with the scene's true-colour image,
the regions and the detected landslide polygons; the per-region table (fused probability, decision,
agreement, evidence, reason, the tabular model's top SHAP features, the imagery features, notes); and
the scene and models used. :func:`write_rgb_png` renders the scene's B04/B03/B02 reflectance onto an
EPSG:4326 grid over a box (2-98 % stretch per band, transparent where there is no data).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.atomic import atomic_path, atomic_write
from common.geo import Grid, RasterOnGrid
from imagery.data.sentinel2 import SceneSource

VENDOR = Path(__file__).resolve().parent / "static" / "vendor" / "leaflet"
RGB = ("B4", "B3", "B2")


def write_rgb_png(scene: SceneSource, box_lonlat: Sequence[float], path: Path, max_px: int = 1024) -> tuple[float, ...]:
    """The scene's true colour over ``box_lonlat`` as an RGBA PNG on an EPSG:4326 grid; returns its bounds."""
    w, s, e, n = box_lonlat
    mid = math.cos(math.radians((s + n) / 2))
    native = 10.0 / 111_320.0  # about 10 m in degrees of latitude
    res = max(native, (e - w) * mid / max_px, (n - s) / max_px)
    grid = Grid.from_bounds((w, s, e, n), "EPSG:4326", (res / max(mid, 0.05), res))
    planes, valid = [], np.ones((grid.height, grid.width), bool)
    for band in RGB:
        if band not in scene.files:
            raise ValueError(f"scene {scene.scene_id} has no {band} for the true-colour image")
        ref = scene.files[band]
        with RasterOnGrid(ref.path, grid, "bilinear", bands=ref.index) as src:
            v = src.read(grid.full_window()) * ref.scale + ref.offset
        valid &= np.isfinite(v)
        planes.append(v)
    out = []
    for v in planes:
        lo, hi = np.nanpercentile(v[valid], [2, 98]) if valid.any() else (0.0, 1.0)
        out.append(np.clip((np.nan_to_num(v) - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8))
    r, g, b = out
    rgba = np.dstack([b, g, r, (valid * 255).astype(np.uint8)])  # OpenCV writes BGRA
    ok, buf = cv2.imencode(".png", rgba)
    if not ok:
        raise ValueError("cannot encode the true-colour PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return tuple(float(x) for x in grid.bounds)


def _json_script(data: Any) -> str:
    return json.dumps(data, default=str).replace("</", "<\\/")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Landslide assessment @TITLE@</title>
<style>@LEAFLET_CSS@</style>
<style>body{font-family:system-ui,sans-serif;margin:1em} #map{height:60vh;border:1px solid #999;background:#eef}
table{border-collapse:collapse;font-size:.85em;margin-top:1em} td,th{border:1px solid #ccc;padding:.2em .4em}</style>
</head><body>
<h1>Landslide assessment</h1>
<p>@SUMMARY@</p>
<ul>@NOTES@</ul>
<div id="map"></div>
<table id="scores"><thead><tr>@HEAD@</tr></thead><tbody>
@ROWS@
</tbody></table>
<script>@LEAFLET_JS@</script>
<script>
const regions = @REGIONS@;
const slides = @SLIDES@;
const b = @BOUNDS@;
const map = L.map("map");
L.control.scale().addTo(map);
L.imageOverlay("data:image/png;base64,@IMAGE@", [[b[1], b[0]], [b[3], b[2]]]).addTo(map);
const r = L.geoJSON(regions, {style: {color: "#06c", weight: 2, fill: false}, onEachFeature: (f, l) =>
  l.bindPopup("region " + f.properties.region_id + ": p_fused " + f.properties.p_fused)}).addTo(map);
L.geoJSON(slides, {style: {color: "#d00", weight: 1, fillOpacity: 0.4}, onEachFeature: (f, l) =>
  l.bindPopup("landslide, " + Math.round(f.properties.area_m2) + " m2")}).addTo(map);
map.fitBounds(r.getBounds().isValid() ? r.getBounds() : [[b[1], b[0]], [b[3], b[2]]]);
</script>
</body></html>
"""

COLUMNS = (
    "region_id",
    "p_fused",
    "decision",
    "agree",
    "evidence",
    "p_tabular",
    "p_imagery",
    "reason",
    "top_features",
    "img_area_frac",
    "img_largest_cc_m2",
    "img_n_components",
    "area_km2",
    "note",
)


def write_report(
    path: Path, report: dict[str, Any], regions: dict[str, Any], landslides: dict[str, Any], rgb_png: Path
) -> Path:
    """Write the self-contained ``report.html`` (module docstring)."""
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{_cell(f['properties'].get(c))}</td>" for c in COLUMNS) + "</tr>"
        for f in regions.get("features", [])
    )
    scene = report.get("scene", {})
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in report.get("scene_notes", []))
    image = base64.b64encode(Path(rgb_png).read_bytes()).decode()
    date = html.escape(str(report.get("date")))
    summary = (
        f"Date {date} (imagery searched {html.escape(' to '.join(report.get('window', [])))}). "
        f"Scene {html.escape(str(scene.get('scene_id')))} of {html.escape(str(scene.get('date')))}, "
        f"{html.escape(str(scene.get('crs')))}, {(scene.get('masked_share') or 0):.0%} masked (cloud, nodata). "
        f"{report.get('landslides', 0)} landslide polygon(s) in {len(regions.get('features', []))} region(s). "
        f"Models: {html.escape(json.dumps(report.get('models', {})))}."
    )
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    page = (
        PAGE.replace("@TITLE@", date)
        .replace("@LEAFLET_CSS@", (VENDOR / "leaflet.css").read_text(encoding="utf-8"))
        .replace("@LEAFLET_JS@", (VENDOR / "leaflet.js").read_text(encoding="utf-8"))
        .replace("@SUMMARY@", summary)
        .replace("@NOTES@", notes)
        .replace("@HEAD@", head)
        .replace("@ROWS@", rows)
        .replace("@REGIONS@", _json_script(regions))
        .replace("@SLIDES@", _json_script(landslides))
        .replace("@BOUNDS@", _json_script(report.get("scene_bounds")))
        .replace("@IMAGE@", image)
    )
    with atomic_write(path) as fh:
        fh.write(page)
    return path
