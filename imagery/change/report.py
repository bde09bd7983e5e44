"""``report.html`` of an event: one offline file, the warnings to check first (the segmenter's fit to the scene),
before/after true colour side by side with the inventory drawn on both (the rejected candidates dashed), a
confidence legend, the polygon table sorted by confidence, the rejected candidates with their reasons and the
summary.

The true-colour views are read back from ``pre.tif`` / ``post.tif`` onto a coarse grid (at most
:data:`MAX_PX` pixels on the long side, averaged), so the report costs little memory whatever the area.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.geo import Feature, Grid, RasterOnGrid, block_cache
from imagery.change.defaults import GDAL_CACHE_MB
from imagery.change.inventory import rejected_line

MAX_PX = 800
_RGB = (3, 2, 1)  # B4, B3, B2 in LAYERS order (1-based bands of pre.tif / post.tif)


def _thumb_grid(grid: Grid) -> Grid:
    scale = max(1.0, max(grid.width, grid.height) / MAX_PX)
    left, bottom, right, top = grid.bounds
    res = grid.res[0] * scale
    return Grid.from_bounds((left, bottom, right, top), grid.crs, res)


def _png(path: Path, grid: Grid, features: Sequence[Feature], title: str, rejected: Sequence[Feature] = ()) -> str:
    import matplotlib  # noqa: PLC0415 - only for the report

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    small = _thumb_grid(grid)
    with RasterOnGrid(path, small, "average", bands=list(_RGB)) as r:
        rgb = np.moveaxis(r.read(), 0, -1)
    img = np.clip(np.nan_to_num(rgb, nan=0.0) / 0.3, 0, 1) ** (1 / 1.4)
    left, bottom, right, top = small.bounds
    fig, ax = plt.subplots(figsize=(5, 5 * small.height / small.width + 0.4), dpi=110)
    ax.imshow(img, extent=(left, right, bottom, top))
    cmap = plt.get_cmap("autumn_r")
    for f in rejected:
        for g in getattr(f.geometry, "geoms", [f.geometry]):
            x, y = g.exterior.xy
            colour = "#2c7bb6" if f.properties["kind"] == "flat_loss" else "#7b3294"
            ax.plot(x, y, color=colour, lw=0.9, ls="--")
    for f in features:
        geoms = getattr(f.geometry, "geoms", [f.geometry])
        for g in geoms:
            x, y = g.exterior.xy
            ax.plot(x, y, color=cmap(float(np.nan_to_num(f.properties["confidence"]))), lw=1.2)
    ax.set_title(title)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


@block_cache(GDAL_CACHE_MB)  # the true-colour views read the full-size composites: a bounded GDAL cache
def write_report(
    out: Path,
    grid: Grid,
    features: Sequence[Feature],
    summary: dict[str, Any],
    *,
    rejected: Sequence[Feature] = (),
) -> Path:
    """Write ``out/report.html`` from ``out/pre.tif``, ``out/post.tif``, the features, the rejected candidates and
    the summary (its ``warnings`` listed first)."""
    pre_title = f"before ({', '.join(summary['acquisitions']['pre'][-3:])} ...)"
    post_title = f"after ({', '.join(summary['acquisitions']['post'][:3])} ...)"
    pre = _png(out / "pre.tif", grid, features, pre_title, rejected)
    post = _png(out / "post.tif", grid, features, post_title, rejected)
    cols = ["id", "confidence", "area_m2", "mean_dndvi", "mean_slope_deg", "clear_obs_pre", "clear_obs_post", "reason"]
    if any("susceptibility" in f.properties for f in features):
        cols.insert(5, "susceptibility")
    if any("p_segmenter" in f.properties for f in features):
        cols.insert(5, "p_segmenter")
    seg = summary["segmenter"]
    if isinstance(seg, dict):
        seg = (
            f"segmenter {seg['model']} ({seg['temporal'] or 'single-date'}, on {' and '.join(seg['inputs'])}) ran on "
            f"{seg['tiles_run']} of {seg['tiles_total']} tiles ({seg['skipped_share']:.0%} skipped by the gate)"
        )
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(f.properties.get(c, '')))}</td>" for c in cols) + "</tr>"
        for f in features
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    warn = summary.get("warnings") or []
    warn_html = (
        '<section class="warnings"><h2>Check before use</h2><ul>'
        + "".join(f"<li>{html.escape(str(w))}</li>" for w in warn)
        + "</ul></section>"
        if warn
        else ""
    )
    r_cols = ["id", "kind", "area_m2", "mean_dndvi", "mean_slope_deg", "reason"]
    if any("p_segmenter" in f.properties for f in rejected):
        r_cols.insert(5, "p_segmenter")
    r_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(f.properties.get(c, '')))}</td>" for c in r_cols) + "</tr>"
        for f in rejected
    )
    r_head = "".join(f"<th>{html.escape(c)}</th>" for c in r_cols)
    r_line = rejected_line(summary.get("rejected") or {})
    text = f"""<!doctype html><html><head><meta charset="utf-8"><title>Event {summary["event_date"]}</title>
<style>body{{font-family:sans-serif;margin:1em}} img{{max-width:48%;margin:0.5%}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:12px}} .legend span{{display:inline-block;width:2em;height:1em}}
.warnings{{border:1px solid #d08700;background:#fff6e0;padding:.4em 1em;margin:.6em 0}}
</style></head><body>
<h1>Landslides after the event of {summary["event_date"]}</h1>
{warn_html}
<p>{summary["n_landslides"]} polygon(s), {summary["detected_area_m2"]:.0f} m2 detected over {summary["area_km2"]} km2;
{html.escape(seg)}. {html.escape(r_line)} (dashed on the views; not in the inventory).</p>
<div><img alt="before" src="data:image/png;base64,{pre}"><img alt="after" src="data:image/png;base64,{post}"></div>
<p class="legend">confidence: <span style="background:#ffff00"></span> low
<span style="background:#ff8000"></span> medium <span style="background:#ff0000"></span> high;
rejected (dashed): <span style="border:2px dashed #2c7bb6"></span> vegetation loss on flat ground
<span style="border:2px dashed #7b3294"></span> segmenter-only</p>
<h2>Inventory (by confidence)</h2><table><tr>{head}</tr>{rows}</table>
<h2>Rejected candidates (not landslides by the cross-checks)</h2><p>{html.escape(r_line)}</p>
<table><tr>{r_head}</tr>{r_rows}</table>
<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=1))}</pre></body></html>
"""
    path = out / "report.html"
    path.write_text(text, encoding="utf-8")
    return path
