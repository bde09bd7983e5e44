"""``report.html`` of an event: one offline file, before/after true colour side by side with the inventory drawn
on both, a confidence legend, the polygon table sorted by confidence and the summary.

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

from common.geo import Feature, Grid, RasterOnGrid

MAX_PX = 800
_RGB = (3, 2, 1)  # B4, B3, B2 in LAYERS order (1-based bands of pre.tif / post.tif)


def _thumb_grid(grid: Grid) -> Grid:
    scale = max(1.0, max(grid.width, grid.height) / MAX_PX)
    left, bottom, right, top = grid.bounds
    res = grid.res[0] * scale
    return Grid.from_bounds((left, bottom, right, top), grid.crs, res)


def _png(path: Path, grid: Grid, features: Sequence[Feature], title: str) -> str:
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


def write_report(out: Path, grid: Grid, features: Sequence[Feature], summary: dict[str, Any]) -> Path:
    """Write ``out/report.html`` from ``out/pre.tif``, ``out/post.tif``, the features and the summary."""
    pre = _png(out / "pre.tif", grid, features, f"before ({', '.join(summary['acquisitions']['pre'][-3:])} ...)")
    post = _png(out / "post.tif", grid, features, f"after ({', '.join(summary['acquisitions']['post'][:3])} ...)")
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
    text = f"""<!doctype html><html><head><meta charset="utf-8"><title>Event {summary["event_date"]}</title>
<style>body{{font-family:sans-serif;margin:1em}} img{{max-width:48%;margin:0.5%}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:12px}} .legend span{{display:inline-block;width:2em;height:1em}}
</style></head><body>
<h1>Landslides after the event of {summary["event_date"]}</h1>
<p>{summary["n_landslides"]} polygon(s), {summary["detected_area_m2"]:.0f} m2 detected over {summary["area_km2"]} km2;
{html.escape(seg)}.</p>
<div><img alt="before" src="data:image/png;base64,{pre}"><img alt="after" src="data:image/png;base64,{post}"></div>
<p class="legend">confidence: <span style="background:#ffff00"></span> low
<span style="background:#ff8000"></span> medium <span style="background:#ff0000"></span> high</p>
<h2>Inventory (by confidence)</h2><table><tr>{head}</tr>{rows}</table>
<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=1))}</pre></body></html>
"""
    path = out / "report.html"
    path.write_text(text, encoding="utf-8")
    return path
