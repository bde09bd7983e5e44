"""The assessment report: one self-contained HTML page, and the scene's RGB as a PNG in lon/lat.

:func:`write_report` writes ``report.html``, a page for triage that opens offline (Leaflet, the page's
script and style are inlined from ``service/static``; no CDN):

- a header with the requested date, the scene (id, date, CRS) and the models by name (a registered
  model's name and version, a run's short id, a file's name; never a raw JSON blob);
- warnings at the top: the report data's own ``warnings`` and ``scene_notes``, regions scored without
  some evidence, the masked (cloud, nodata) share, a scene date outside the searched window;
- a map: the scene's true colour, the regions outlined in their decision's colour (with a legend), the
  detected landslide polygons filled on top (by ``confidence`` when they carry one);
- the per-region table sorted by fused probability (highest first) and sortable by any column, with
  probabilities to 3 decimals beside each model's decision threshold and decisions in words
  (:data:`DECISION_WORDS`); a CSV download of the rows built in the page, links to the files beside it;
- with change evidence (an event date): a header line (event, windows, acquisitions, the rule), the change
  columns after the reason (:data:`CHANGE_COLUMNS`), and a warning naming the regions without it.

Every value that comes from input (region ids, scene ids, notes, reasons, model URIs, warnings) is
escaped with :func:`html.escape` in the HTML or travels as JSON in a non-executed
``<script type="application/json">`` block (``<``, ``>``, ``&`` written as ``\\u003c`` …) and is set with
``textContent`` by the script; there are no inline event handlers, and the two executable scripts
(Leaflet and ``static/report/report.js``) are the same bytes in every report (:data:`SCRIPT_SHA256` lists
their CSP hashes). :func:`write_rgb_png` renders the scene's B04/B03/B02 reflectance onto an EPSG:4326
grid over a box (2-98 % stretch per band, transparent where there is no data).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np

from common.atomic import atomic_path, atomic_write
from common.geo import Grid, RasterOnGrid
from imagery.data.sentinel2 import SceneSource

STATIC = Path(__file__).resolve().parent / "static"
VENDOR = STATIC / "vendor" / "leaflet"
REPORT_ASSETS = STATIC / "report"
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


DECISION_WORDS = {"likely": "landslide likely", "unlikely": "unlikely", "unknown": "unknown: no evidence"}
DECISION_COLOURS = {"likely": "#d7301f", "unlikely": "#1a9850", "unknown": "#969696"}
LANDSLIDE_COLOUR = "#ffd92f"
CONFIDENCE_COLOURS = {"high": "#e31a1c", "medium": "#fd8d3c", "low": "#fecc5c"}
FILES_BESIDE = (
    "regions.geojson",
    "landslides.geojson",
    "probability.tif",
    "mask.tif",
    "regions.gpkg",
    "landslides.gpkg",
    "report.json",
    "overview.png",
)
MASKED_WARN_SHARE = 0.2  # a masked share above this is a warning, below it a line in the header

# (property, header, kind): "p" probability (3 decimals, with its model's threshold), "f" fraction, "n" number, "t" text
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("region_id", "region", "t"),
    ("p_fused", "p fused", "p"),
    ("decision", "decision", "t"),
    ("agree", "models agree", "t"),
    ("evidence", "evidence", "t"),
    ("p_tabular", "p tabular", "p"),
    ("p_imagery", "p imagery", "p"),
    ("reason", "reason", "t"),
    ("top_features", "top SHAP features", "t"),
    ("img_area_frac", "landslide share", "f"),
    ("img_largest_cc_m2", "largest scar (m²)", "n"),
    ("img_n_components", "scars", "n"),
    ("area_km2", "area (km²)", "n"),
    ("note", "note", "t"),
)
THRESHOLD_OF = {"p_fused": "fused", "p_tabular": "tabular", "p_imagery": "imagery"}
#: The change evidence's columns (an assessment with an event date), shown after ``reason`` when present.
CHANGE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("change", "change evidence", "t"),
    ("change_reason", "change reason", "t"),
    ("chg_flagged_share", "flagged share (change)", "f"),
    ("chg_dndvi_slope", "mean dNDVI on slopes", "f"),
    ("chg_observed_share", "observed share (change)", "f"),
    ("chg_clear_pre", "clear views before", "n"),
    ("chg_clear_post", "clear views after", "n"),
)


def columns_of(props: list[dict[str, Any]]) -> tuple[tuple[str, str, str], ...]:
    """The table's columns: :data:`COLUMNS`, with :data:`CHANGE_COLUMNS` after ``reason`` when a row has them."""
    if not any("change" in p for p in props):
        return COLUMNS
    at = [c for c, _l, _k in COLUMNS].index("reason") + 1
    return COLUMNS[:at] + CHANGE_COLUMNS + COLUMNS[at:]


def _asset(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _script_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


# the CSP hashes of the report's two executable scripts (a server may allow exactly these)
SCRIPT_SHA256 = (_script_hash(_asset(VENDOR / "leaflet.js")), _script_hash(_asset(REPORT_ASSETS / "report.js")))


def json_for_html(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>``, ``&`` or line separators."""
    text = json.dumps(data, default=str, allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _clean(v: Any) -> Any:
    """JSON-safe: non-finite floats become ``None``; containers recursively."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def decision_key(decision: Any) -> str:
    """``likely`` / ``unlikely`` / ``unknown`` for a decision of 1 / 0 / empty (or its words)."""
    if decision is None or decision == "" or (isinstance(decision, float) and not math.isfinite(decision)):
        return "unknown"
    if isinstance(decision, str):
        low = decision.strip().lower()
        if low in ("1", "true", "yes", "likely", "landslide likely", "landslide"):
            return "likely"
        if low in ("0", "false", "no", "unlikely"):
            return "unlikely"
        return "unknown"
    return "likely" if bool(decision) else "unlikely"


def model_label(uri: Any) -> str:
    """A short name for a model URI: ``models:/name/3`` -> ``name v3``, ``runs:/<id>/model`` -> ``run <id8>``,
    a path -> its file or folder name; a dict with ``name``/``version`` -> ``name vN``."""
    if uri is None or uri == "":
        return "none"
    if isinstance(uri, dict):
        name, version = uri.get("name") or uri.get("registered_name"), uri.get("version")
        if name:
            return f"{name} v{version}" if version not in (None, "") else str(name)
        return model_label(uri.get("uri"))
    text = str(uri)
    if text.startswith("models:/"):
        rest = text[len("models:/") :].strip("/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return f"{name} @{alias}"
        parts = rest.split("/")
        return f"{parts[0]} v{parts[1]}" if len(parts) > 1 and parts[1] else parts[0]
    if text.startswith("runs:/"):
        parts = text[len("runs:/") :].strip("/").split("/")
        tail = "/".join(parts[1:])
        return f"run {parts[0][:8]}" + (f" ({tail})" if tail and tail != "model" else "")
    name = Path(text.rstrip("/")).name
    return name or text


def _in_window(day: Any, window: Sequence[Any]) -> bool | None:
    try:
        d = str(day)[:10]
        lo, hi = (str(w)[:10] for w in window)
    except (TypeError, ValueError):
        return None
    if len(d) != 10 or len(lo) != 10 or len(hi) != 10:
        return None
    return lo <= d <= hi


def report_warnings(report: dict[str, Any], regions: list[dict[str, Any]]) -> list[str]:
    """Everything an analyst must see before the numbers, as plain strings (escaped when written)."""
    out: list[str] = []
    for w in list(report.get("warnings") or []) + list(report.get("scene_notes") or []):
        text = w.get("message", json.dumps(w, default=str)) if isinstance(w, dict) else str(w)
        if text and text not in out:
            out.append(text)
    scene = report.get("scene") or {}
    window = report.get("window") or []
    if scene.get("date") and len(window) == 2 and _in_window(scene["date"], window) is False:
        out.append(f"the scene's date {scene['date']} is outside the searched window {window[0]} to {window[1]}")
    masked = _finite(scene.get("masked_share"))
    if masked is not None and masked >= MASKED_WARN_SHARE:
        out.append(f"{masked:.0%} of the scene is masked (cloud, cloud shadow, snow or no data)")
    partial: dict[str, list[str]] = {}
    unseen: list[str] = []
    for p in regions:
        ev = str(p.get("evidence") or "")
        base = ev.removesuffix("+change")  # the trained models' evidence; the change evidence is listed below
        if base and base not in ("both", "change_only"):
            partial.setdefault(base, []).append(str(p.get("region_id")))
        if ev == "change_only":
            partial.setdefault("none", []).append(str(p.get("region_id")))
        if str(p.get("change") or "").startswith("unknown"):
            unseen.append(str(p.get("region_id")))
    for ev, ids in sorted(partial.items()):
        what = {
            "tabular_only": "without imagery (cloud or no data)",
            "imagery_only": "without the tabular model (no factor rasters or too little cover)",
            "none": "with no evidence at all (decision unknown)",
        }.get(ev, f"with evidence {ev}")
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        out.append(f"{len(ids)} region(s) scored {what}: {shown}")
    if unseen:
        shown = ", ".join(unseen[:10]) + (f" and {len(unseen) - 10} more" if len(unseen) > 10 else "")
        out.append(f"{len(unseen)} region(s) without change evidence (unknown: no clear observation): {shown}")
    return out


def _thresholds(report: dict[str, Any]) -> dict[str, float | None]:
    models = report.get("models") or {}
    given = report.get("thresholds") or {}
    out: dict[str, float | None] = {}
    for name in ("fused", "tabular", "imagery"):
        out[name] = _finite(given.get(name, models.get(f"{name}_threshold")))
    return out


def _cell(prop: str, kind: str, props: dict[str, Any], thresholds: dict[str, float | None]) -> str:
    v = props.get(prop)
    if prop == "decision":
        key = decision_key(v)
        return f'<td class="decision" data-v="{html.escape(DECISION_WORDS[key])}">{DECISION_WORDS[key]}</td>'
    if kind in ("p", "f", "n"):
        x = _finite(v)
        if x is None:
            return '<td class="num" data-v=""></td>'
        if kind == "p":
            thr = thresholds.get(THRESHOLD_OF.get(prop, ""))
            mark = "" if thr is None else f' <span class="thr">{"≥" if x >= thr else "<"} {thr:.3f}</span>'
            return f'<td class="num" data-v="{x!r}">{x:.3f}{mark}</td>'
        if kind == "f":
            return f'<td class="num" data-v="{x!r}">{x:.3f}</td>'
        shown = f"{x:,.0f}" if abs(x) >= 100 else (f"{x:.3f}" if x != int(x) else f"{int(x)}")
        return f'<td class="num" data-v="{x!r}">{shown}</td>'
    if isinstance(v, bool):
        v = "yes" if v else "no"
    text = "" if v is None else str(v)
    return f'<td data-v="{html.escape(text)}">{html.escape(text)}</td>'


def _sort_key(props: dict[str, Any]) -> tuple[int, float]:
    p = _finite(props.get("p_fused"))
    return (0, -p) if p is not None else (1, 0.0)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Landslide assessment @TITLE@</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>@LEAFLET_CSS@</style>
<style>@REPORT_CSS@</style>
</head><body>
<header>
<h1>Landslide assessment @TITLE@</h1>
<dl>@HEADER@</dl>
</header>
@WARNINGS@
<div class="legend">@LEGEND@</div>
<div id="map"></div>
<p class="files">@FILES@<button id="csv" type="button">Download the table (CSV)</button></p>
<table id="scores"><thead><tr>@HEAD@</tr></thead><tbody>
@ROWS@
</tbody></table>
<script type="application/json" id="report-data">@DATA@</script>
<script>@LEAFLET_JS@</script>
<script>@REPORT_JS@</script>
</body></html>
"""


def write_report(
    path: Path,
    report: dict[str, Any],
    regions: dict[str, Any],
    landslides: dict[str, Any],
    rgb_png: Path | None,
    *,
    files: Sequence[str] | None = None,
) -> Path:
    """Write the self-contained ``report.html`` (module docstring).

    ``report`` is ``report.json``'s dict (``date``, ``window``, ``scene``, ``scene_notes``, ``models`` with
    URIs and ``*_threshold``s, optional ``thresholds`` and ``warnings``); ``regions`` / ``landslides`` are
    GeoJSON FeatureCollections in EPSG:4326; ``files`` names the outputs beside the report to link (default:
    those of :data:`FILES_BESIDE` that exist in the report's folder when it is written).
    """
    path = Path(path)
    esc = html.escape
    thresholds = _thresholds(report)
    feats = sorted(regions.get("features", []), key=lambda f: _sort_key(f.get("properties") or {}))
    props = [dict(f.get("properties") or {}) for f in feats]
    scene = report.get("scene") or {}
    models = report.get("models") or {}
    warnings = report_warnings(report, props)

    date = str(report.get("date") or "")
    window = report.get("window") or []
    header: list[tuple[str, str]] = [
        ("requested date", date + (f" (imagery searched {window[0]} to {window[1]})" if len(window) == 2 else ""))
    ]
    masked = _finite(scene.get("masked_share"))
    header.append(
        (
            "scene",
            f"{scene.get('scene_id') or 'unknown'} of {scene.get('date') or 'unknown date'}, {scene.get('crs') or ''}"
            + (f", {masked:.0%} masked (cloud, nodata)" if masked is not None else ""),
        )
    )
    names = report.get("model_names") or {}
    for role in ("tabular", "imagery", "fusion"):
        if role in models or role in names:
            thr = thresholds.get("fused" if role == "fusion" else role)
            header.append(
                (
                    f"{role} model",
                    model_label(names.get(role) or models.get(role))
                    + (f", threshold {thr:.3f}" if thr is not None else ""),
                )
            )
    if models.get("policy"):
        header.append(("decision policy", str(models["policy"])))
    change = report.get("change") or {}
    if change:
        win, acq = change.get("windows") or {}, change.get("acquisitions") or {}
        pre, post = win.get("pre") or ["?", "?"], win.get("post") or ["?", "?"]
        rule = change.get("rule") or {}
        header.append(
            (
                "change evidence",
                f"event {change.get('event_date')}: {len(acq.get('pre') or [])} acquisition(s) before "
                f"({pre[0]} to {pre[1]}), {len(acq.get('post') or [])} after ({post[0]} to {post[1]}); "
                f"change where at least {rule.get('min_flagged_share', 0):.0%} of the observed region and "
                f"{rule.get('min_flagged_m2', 0):,.0f} m2 show vegetation loss on slopes (it makes a region likely)",
            )
        )
    counts = {k: sum(decision_key(p.get("decision")) == k for p in props) for k in DECISION_WORDS}
    header.append(
        (
            "result",
            f"{len(props)} region(s): "
            + ", ".join(f"{counts[k]} {DECISION_WORDS[k]}" for k in DECISION_WORDS if counts[k])
            + f"; {len(landslides.get('features', []))} landslide polygon(s)",
        )
    )
    header_html = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in header)
    warn_html = (
        '<section class="warnings" id="warnings"><h2>Check before use</h2><ul>'
        + "".join(f"<li>{esc(w)}</li>" for w in warnings)
        + "</ul></section>"
        if warnings
        else ""
    )
    legend = "".join(f'<span><span class="sw {k}"></span>region: {DECISION_WORDS[k]}</span>' for k in DECISION_WORDS)
    confidences = {str((f.get("properties") or {}).get("confidence")) for f in landslides.get("features", [])} & set(
        CONFIDENCE_COLOURS
    )
    if confidences:
        legend += "".join(
            f'<span><span class="sw conf-{c}"></span>landslide, {c} confidence</span>'
            for c in CONFIDENCE_COLOURS
            if c in confidences
        )
    else:
        legend += '<span><span class="sw slide"></span>detected landslide</span>'
    if files is None:
        files = [n for n in FILES_BESIDE if (path.parent / n).is_file()]
    files_html = "".join(f'<a href="{esc(quote(n))}" download>{esc(n)}</a>' for n in files)

    def th(prop: str, label: str) -> str:
        thr = thresholds.get(THRESHOLD_OF.get(prop, ""))
        extra = f" (threshold {thr:.3f})" if thr is not None else ""
        sort = ' aria-sort="descending"' if prop == "p_fused" else ""
        return f'<th{sort}><button type="button">{esc(label + extra)}</button></th>'

    columns = columns_of(props)
    head = "".join(th(c, label) for c, label, _k in columns)
    rows = "\n".join(
        f'<tr class="{decision_key(p.get("decision"))}">'
        + "".join(_cell(c, k, p, thresholds) for c, _l, k in columns)
        + "</tr>"
        for p in props
    )
    map_regions = {
        "type": "FeatureCollection",
        "features": [
            {
                **f,
                "properties": {
                    **(f.get("properties") or {}),
                    "_decision_key": decision_key((f.get("properties") or {}).get("decision")),
                    "_decision_label": DECISION_WORDS[decision_key((f.get("properties") or {}).get("decision"))],
                },
            }
            for f in feats
        ],
    }
    csv_columns = list(dict.fromkeys(c for p in props for c in p))
    csv_rows = [{**p, "decision": DECISION_WORDS[decision_key(p.get("decision"))]} for p in props]
    for name, thr in thresholds.items():
        if thr is not None:
            csv_columns.append(f"threshold_{name}")
            for r in csv_rows:
                r[f"threshold_{name}"] = thr
    image = "data:image/png;base64," + base64.b64encode(Path(rgb_png).read_bytes()).decode() if rgb_png else None
    data = _clean(
        {
            "regions": map_regions,
            "landslides": landslides,
            "bounds": report.get("scene_bounds"),
            "image": image,
            "thresholds": thresholds,
            "decision_colours": DECISION_COLOURS,
            "landslide_colour": LANDSLIDE_COLOUR,
            "confidence_colours": CONFIDENCE_COLOURS,
            "rows": csv_rows,
            "csv_columns": csv_columns,
            "csv_name": path.with_suffix(".csv").name.replace("report", "regions"),
        }
    )
    parts = {
        "@TITLE@": esc(date),
        "@LEAFLET_CSS@": _asset(VENDOR / "leaflet.css"),
        "@REPORT_CSS@": _asset(REPORT_ASSETS / "report.css"),
        "@HEADER@": header_html,
        "@WARNINGS@": warn_html,
        "@LEGEND@": legend,
        "@FILES@": files_html,
        "@HEAD@": head,
        "@ROWS@": rows,
        "@DATA@": json_for_html(data),
        "@LEAFLET_JS@": _asset(VENDOR / "leaflet.js"),
        "@REPORT_JS@": _asset(REPORT_ASSETS / "report.js"),
    }
    page = re.sub("|".join(re.escape(k) for k in parts), lambda m: parts[m.group(0)], PAGE)
    with atomic_write(path) as fh:
        fh.write(page)
    return path
