"""Outputs that open styled in QGIS: raster colour tables and ``.qml`` sidecars, GeoPackage default styles.

QGIS picks up a style by itself in two places, and this module writes both:

* a ``.qml`` file beside a raster or vector file with the same stem (``probability.tif`` ->
  ``probability.qml``): :func:`write_qml` (atomic). :func:`probability_qml` is a colour ramp over 0-1 with
  the decision threshold marked (grey-blue below it, yellow-to-red from it up);
  :func:`classes_qml` is a paletted renderer with a colour and a name per class code;
* a GeoPackage's ``layer_styles`` table, the style QGIS applies when the layer is loaded:
  :func:`write_layer_style` (sqlite3, after the layer is written; the table and its ``gpkg_contents``
  row are created as QGIS creates them). :func:`categorized_qml` (one colour per attribute value, e.g.
  regions by decision) and :func:`graduated_qml` (value ranges, e.g. landslides by confidence) make
  the vector styles: :func:`regions_by_decision_qml` (assess), :func:`landslides_by_confidence_qml`
  (predict_scene's ``mean_prob``, map_event's ``confidence``) and :func:`validation_by_status_qml` (validate).

Colour tables and category names inside the raster itself are set by :class:`common.geo.CogWriter`
(``colormap=``, the :data:`common.geo.CLASSES_TAG` tag); :func:`hex_rgba` converts ``#rrggbb[aa]``.
Colours are ``#rrggbb`` or ``#rrggbbaa`` strings.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from xml.sax.saxutils import quoteattr

from common.atomic import atomic_write

PathLike = str | Path
QGIS_VERSION = "3.28.0-Firenze"  # the QML dialect written (read by QGIS 3.x)

# the project's palette: regions by decision, landslides by confidence, probabilities
DECISION_STYLE: dict[str | int | None, tuple[str, str]] = {
    1: ("#d7301f", "landslide likely"),
    0: ("#1a9850", "unlikely"),
    None: ("#969696", "unknown: no evidence"),
}
CONFIDENCE_COLOURS = ("#fecc5c", "#fd8d3c", "#e31a1c")  # low, medium, high
# validation polygons by status (fusion.validation): a true positive, a false detection, a missed landslide
STATUS_STYLE: dict[str | int | None, tuple[str, str]] = {
    "matched": ("#1a9850", "matched (detected and in the reference)"),
    "false": ("#d7301f", "false detection (not in the reference)"),
    "missed": ("#7b3294", "missed (in the reference, not detected)"),
}
# candidates map_event rejected (imagery.change.inventory), by kind: outlined, barely filled (not landslides)
REJECTED_STYLE: dict[str | int | None, tuple[str, str]] = {
    "flat_loss": ("#2c7bb6", "vegetation loss on flat ground: likely harvest or clearing"),
    "segmenter_only": ("#7b3294", "segmenter-only: older landslide or bare rock"),
}


def hex_rgba(colour: str) -> tuple[int, int, int, int]:
    """``#rrggbb`` or ``#rrggbbaa`` -> ``(r, g, b, a)`` in 0-255."""
    c = colour.lstrip("#")
    if len(c) not in (6, 8):
        raise ValueError(f"colour {colour!r} is not #rrggbb or #rrggbbaa")
    r, g, b = (int(c[i : i + 2], 16) for i in (0, 2, 4))
    return r, g, b, int(c[6:8], 16) if len(c) == 8 else 255


def _rgba_text(colour: str, alpha: int | None = None) -> str:
    r, g, b, a = hex_rgba(colour)
    return f"{r},{g},{b},{a if alpha is None else alpha}"


def _doc(body: str, categories: str = "AllStyleCategories") -> str:
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        f'<qgis version="{QGIS_VERSION}" styleCategories="{categories}">\n{body}</qgis>\n'
    )


_MINMAX = (
    "<minMaxOrigin><limits>None</limits><extent>WholeRaster</extent><statAccuracy>Estimated</statAccuracy>"
    "<cumulativeCutLower>0.02</cumulativeCutLower><cumulativeCutUpper>0.98</cumulativeCutUpper>"
    "<stdDevFactor>2</stdDevFactor></minMaxOrigin>"
)


def _raster_pipe(renderer: str) -> str:
    return (
        "  <pipe>\n"
        f"{renderer}"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeStrength="100"'
        ' colorizeRed="255" colorizeGreen="128" colorizeBlue="128"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "  </pipe>\n  <blendMode>0</blendMode>\n"
    )


def probability_qml(threshold: float | None = None, *, band: int = 1, label: str = "P(landslide)") -> str:
    """A QGIS pseudocolour ramp over probabilities 0-1 with ``threshold`` marked (module docstring).

    Below the threshold: transparent to light grey-blue (nothing decided); at it the colour jumps to
    yellow (the decision boundary, labelled ``threshold 0.xx``), then orange to red at 1.
    """
    t = min(max(0.5 if threshold is None else float(threshold), 1e-3), 1 - 1e-3)  # a ramp needs 0 < t < 1
    below = max(t - 1e-6, 0.0)
    items = [
        (0.0, "#f7fbff", 0, "0"),
        (below, "#9ecae1", 160, f"below {t:.2f}"),
        (t, "#ffff33", 230, f"threshold {t:.2f}" + ("" if threshold is not None else " (default)")),
        ((t + 1) / 2, "#fd8d3c", 240, f"{(t + 1) / 2:.2f}"),
        (1.0, "#bd0026", 255, "1"),
    ]
    entries = "".join(
        f'          <item value="{v:.6g}" color="{c}" alpha="{a}" label={quoteattr(lab)}/>\n' for v, c, a, lab in items
    )
    renderer = (
        f'    <rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" alphaBand="-1"'
        f' classificationMin="0" classificationMax="1" nodataColor="">\n'
        f"      <rasterTransparency/>\n      {_MINMAX}\n      <rastershader>\n"
        '        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" minimumValue="0"'
        ' maximumValue="1" clip="0" labelPrecision="2">\n'
        f"{entries}        </colorrampshader>\n      </rastershader>\n    </rasterrenderer>\n"
    )
    return _doc(f"  <!-- {label}; decision threshold {t:.4g} -->\n" + _raster_pipe(renderer))


def breaks_qml(breaks: Sequence[float], colours: Sequence[str], names: Sequence[str], *, band: int = 1) -> str:
    """A QGIS discrete colour ramp for a continuous raster: class ``i`` is ``breaks[i-1] <= v < breaks[i]``
    (``len(colours) == len(names) == len(breaks) + 1``; the last class is open-ended)."""
    if not len(colours) == len(names) == len(breaks) + 1:
        raise ValueError(f"{len(breaks)} breaks need {len(breaks) + 1} colours and names")
    uppers = [f"{b:.6g}" for b in breaks] + ["inf"]
    entries = "".join(
        f'          <item value="{u}" color="{c}" alpha="255" label={quoteattr(n)}/>\n'
        for u, c, n in zip(uppers, colours, names, strict=True)
    )
    renderer = (
        f'    <rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" alphaBand="-1"'
        ' classificationMin="0" classificationMax="1" nodataColor="">\n'
        f"      <rasterTransparency/>\n      {_MINMAX}\n      <rastershader>\n"
        '        <colorrampshader colorRampType="DISCRETE" classificationMode="1" minimumValue="0"'
        ' maximumValue="1" clip="0" labelPrecision="4">\n'
        f"{entries}        </colorrampshader>\n      </rastershader>\n    </rasterrenderer>\n"
    )
    return _doc(_raster_pipe(renderer))


def classes_qml(classes: Mapping[int, tuple[str, str]], *, band: int = 1) -> str:
    """A QGIS paletted renderer: ``{code: (colour, name)}``; codes not listed (nodata) are not drawn."""
    entries = "".join(
        f'        <paletteEntry value="{int(code)}" color="{colour[:7]}" alpha="{hex_rgba(colour)[3]}"'
        f" label={quoteattr(name)}/>\n"
        for code, (colour, name) in sorted(classes.items())
    )
    renderer = (
        f'    <rasterrenderer type="paletted" band="{band}" opacity="1" alphaBand="-1" nodataColor="">\n'
        f"      <rasterTransparency/>\n      {_MINMAX}\n      <colorPalette>\n{entries}      </colorPalette>\n"
        "    </rasterrenderer>\n"
    )
    return _doc(_raster_pipe(renderer))


def _fill_symbol(name: str, colour: str, *, fill_alpha: int, outline: str | None = None, width: float = 0.5) -> str:
    opts = {
        "color": _rgba_text(colour, fill_alpha),
        "outline_color": _rgba_text(outline or colour),
        "outline_style": "solid",
        "outline_width": f"{width:g}",
        "outline_width_unit": "MM",
        "style": "solid",
        "joinstyle": "bevel",
    }
    options = "".join(f'            <Option type="QString" name="{k}" value="{v}"/>\n' for k, v in opts.items())
    return (
        f'      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
        f'          <Option type="Map">\n{options}          </Option>\n'
        "        </layer>\n      </symbol>\n"
    )


def categorized_qml(
    field: str,
    categories: Mapping[str | int | None, tuple[str, str]],
    *,
    fill_alpha: int = 60,
    outline: str | None = None,
) -> str:
    """Polygons coloured by ``field``'s value: ``{value: (colour, label)}``; ``None`` is the NULL/other class."""
    cats, symbols = [], []
    for i, (value, (colour, label)) in enumerate(categories.items()):
        v = "" if value is None else str(value)
        cats.append(f'      <category value={quoteattr(v)} symbol="{i}" label={quoteattr(label)} render="true"/>\n')
        symbols.append(_fill_symbol(str(i), colour, fill_alpha=fill_alpha, outline=outline, width=0.6))
    body = (
        f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" forceraster="0"'
        ' enableorderby="0">\n'
        f"    <categories>\n{''.join(cats)}    </categories>\n    <symbols>\n{''.join(symbols)}    </symbols>\n"
        "  </renderer-v2>\n"
    )
    return _doc(body, "Symbology")


def graduated_qml(
    field: str,
    ranges: Sequence[tuple[float, float, str, str]],
    *,
    fill_alpha: int = 200,
    outline: str = "#000000",
) -> str:
    """Polygons coloured by ranges of ``field``: ``[(lower, upper, colour, label), ...]``."""
    rows, symbols = [], []
    for i, (lo, hi, colour, label) in enumerate(ranges):
        rows.append(
            f'      <range lower="{lo:.6f}" upper="{hi:.6f}" symbol="{i}" label={quoteattr(label)} render="true"/>\n'
        )
        symbols.append(_fill_symbol(str(i), colour, fill_alpha=fill_alpha, outline=outline, width=0.3))
    body = (
        f'  <renderer-v2 type="graduatedSymbol" attr={quoteattr(field)} graduatedMethod="GraduatedColor"'
        ' symbollevels="0" forceraster="0" enableorderby="0">\n'
        f"    <ranges>\n{''.join(rows)}    </ranges>\n    <symbols>\n{''.join(symbols)}    </symbols>\n"
        '    <mode name="fixed"/>\n  </renderer-v2>\n'
    )
    return _doc(body, "Symbology")


def regions_by_decision_qml(field: str = "decision") -> str:
    """Regions outlined and lightly filled by decision (1 likely, 0 unlikely, empty unknown)."""
    return categorized_qml(field, DECISION_STYLE)


def validation_by_status_qml(field: str = "status") -> str:
    """Validation polygons (detected and reference) by ``status``: matched, false detection, missed."""
    return categorized_qml(field, STATUS_STYLE, fill_alpha=90)


def rejected_by_kind_qml(field: str = "kind") -> str:
    """Rejected candidates (``map_event``'s ``rejected`` layer) by ``kind``: flat-ground loss, segmenter-only."""
    return categorized_qml(field, REJECTED_STYLE, fill_alpha=30)


def landslides_by_confidence_qml(threshold: float | None = None, field: str = "mean_prob") -> str:
    """Landslide polygons by their mean probability: low / medium / high confidence in three equal steps
    from the decision ``threshold`` (0.5 when unknown) to 1; polygons below the threshold count as low."""
    t = 0.5 if threshold is None else float(threshold)
    step = (1.0 - t) / 3
    bounds = [0.0, t + step, t + 2 * step, 1.0]
    names = ("low", "medium", "high")
    return graduated_qml(
        field,
        [
            (
                bounds[i],
                bounds[i + 1],
                CONFIDENCE_COLOURS[i],
                f"{names[i]} confidence ({field} {bounds[i]:.2f}-{bounds[i + 1]:.2f})",
            )
            for i in range(3)
        ],
    )


def qml_path(path: PathLike) -> Path:
    """Where QGIS looks for ``path``'s default style: the same name with ``.qml``."""
    return Path(path).with_suffix(".qml")


def write_qml(path: PathLike, qml: str) -> Path:
    """Write ``qml`` atomically as the sidecar style of the file ``path`` (:func:`qml_path`); returns it."""
    target = qml_path(path)
    with atomic_write(target) as fh:
        fh.write(qml)
    return target


_LAYER_STYLES = """CREATE TABLE IF NOT EXISTS layer_styles (
  id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
  f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
  useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
  update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"""


def write_layer_style(gpkg: PathLike, layer: str, qml: str, *, name: str | None = None, description: str = "") -> None:
    """Store ``qml`` as ``layer``'s default style in the GeoPackage's ``layer_styles`` table (QGIS applies it
    on load). Any earlier default of that layer stops being the default. Call it on a finished file (or on
    the temporary file before its atomic rename)."""
    with closing(sqlite3.connect(str(gpkg))) as con, con:
        row = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)).fetchone()
        if row is None:
            raise ValueError(f"{gpkg} has no geometry layer {layer!r}")
        con.execute(_LAYER_STYLES)
        con.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, last_change)"
            " VALUES ('layer_styles', 'attributes', 'layer_styles', '', strftime('%Y-%m-%dT%H:%M:%fZ','now'))"
        )
        con.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
        con.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName,"
            " styleQML, styleSLD, useAsDefault, description, owner, ui) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', '')",
            (layer, row[0], name or layer, qml, description),
        )
