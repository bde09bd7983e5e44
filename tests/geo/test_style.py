"""Outputs open styled in QGIS: band descriptions and units, colour tables and class names, ``.qml``
sidecars, and default styles in a GeoPackage's ``layer_styles`` table; read back with GDAL/OGR
(rasterio, pyogrio) and sqlite3."""

from __future__ import annotations

import json
import sqlite3
import warnings
import xml.etree.ElementTree as ET
from contextlib import closing
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from common.geo import CLASSES_TAG, CogWriter, Feature, Grid, write_gpkg
from common.geo.style import (
    breaks_qml,
    classes_qml,
    landslides_by_confidence_qml,
    probability_qml,
    regions_by_decision_qml,
    write_layer_style,
)
from fusion.demo.synthetic_scene import write_synthetic_scene
from imagery.inference.config import SceneConfig
from imagery.inference.scene import run_scene
from tabular.susceptibility import CLASS_COLOURS, CLASS_NAMES, SusceptibilityRaster
from tests.scenes.helpers import RuleSegmenter

GRID = Grid("EPSG:32633", rasterio.Affine(10.0, 0, 500_000.0, 0, -10.0, 5_200_000.0), 64, 48)


def _qml(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "qgis"
    return root


def _styles(gpkg: Path) -> list[tuple]:
    with closing(sqlite3.connect(gpkg)) as con:
        return con.execute(
            "SELECT f_table_name, f_geometry_column, styleName, styleQML, useAsDefault FROM layer_styles ORDER BY id"
        ).fetchall()


def test_probability_qml_marks_the_threshold() -> None:
    items = _qml_text_items(probability_qml(0.37))
    assert [round(v, 4) for v, _l in items][0] == 0 and items[-1][0] == 1
    assert ("threshold 0.37" in lab for _v, lab in items) and any(
        v == pytest.approx(0.37) and lab == "threshold 0.37" for v, lab in items
    )
    assert [v for v, _l in items] == sorted(v for v, _l in items)


def _qml_text_items(qml: str) -> list[tuple[float, str]]:
    root = ET.fromstring(qml)
    return [(float(i.get("value")), i.get("label")) for i in root.iter("item")]


def test_cog_writer_descriptions_units_colour_table_and_sidecar(tmp_path: Path) -> None:
    prob = tmp_path / "p.tif"
    tags = {"units": "probability 0-1", "long_name": "P"}
    with CogWriter(prob, GRID, "float32", np.nan, tags=tags, qml=probability_qml(0.6)) as w:
        w.write(np.linspace(0, 1, GRID.width * GRID.height, dtype=np.float32).reshape(GRID.shape))
    with rasterio.open(prob) as ds:
        assert ds.descriptions == ("P",) and ds.units == ("probability 0-1",)
    assert (tmp_path / "p.qml").is_file() and _qml(tmp_path / "p.qml").find(".//colorrampshader") is not None
    cls = tmp_path / "c.tif"
    names = {"1": "low", "2": "high"}
    with CogWriter(cls, GRID, "uint8", 0, tags={CLASSES_TAG: json.dumps(names), "units": "class", "long_name": "cls"},
                   colormap={1: "#00ff00", 2: "#ff000080"},
                   qml=classes_qml({1: ("#00ff00", "low"), 2: ("#ff000080", "high")})) as w:  # fmt: skip
        w.write(np.ones(GRID.shape, np.uint8))
    with rasterio.open(cls) as ds:
        cmap = ds.colormap(1)
        assert cmap[1][:3] == (0, 255, 0) and cmap[2][:3] == (255, 0, 0)  # a GeoTIFF colour table has no alpha
        assert json.loads(ds.tags()[CLASSES_TAG]) == names and ds.descriptions == ("cls",)
    palette = _qml(tmp_path / "c.qml").findall(".//paletteEntry")
    got = [(p.get("value"), p.get("label"), p.get("alpha")) for p in palette]
    assert got == [("1", "low", "255"), ("2", "high", "128")]
    with pytest.raises(ValueError, match="uint8 or uint16"):
        CogWriter(tmp_path / "x.tif", GRID, "float32", np.nan, colormap={1: "#000000"})


def test_gpkg_default_style_in_layer_styles(tmp_path: Path) -> None:
    feats = [
        Feature(shapely.box(0, 0, 10, 10), {"decision": 1}),
        Feature(shapely.box(20, 0, 30, 10), {"decision": None}),
    ]
    out = write_gpkg(
        feats, tmp_path / "regions.gpkg", "EPSG:32633", layer="regions", style_qml=regions_by_decision_qml()
    )
    styles = _styles(out)
    assert len(styles) == 1 and styles[0][0] == "regions" and styles[0][1] == "geom" and styles[0][4] == 1
    cats = ET.fromstring(styles[0][3]).findall(".//category")
    assert [(c.get("value"), c.get("label")) for c in cats] == [
        ("1", "landslide likely"), ("0", "unlikely"), ("", "unknown: no evidence")
    ]  # fmt: skip
    # the layer still reads as before, and a second default replaces the first
    assert pyogrio.read_info(out, layer="regions")["features"] == 2
    write_layer_style(out, "regions", regions_by_decision_qml(), name="again")
    assert [(s[2], s[4]) for s in _styles(out)] == [("regions", 0), ("again", 1)]
    with pytest.raises(ValueError, match="no geometry layer 'nope'"):
        write_layer_style(out, "nope", "<qgis/>")
    # no temporary file left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["regions.gpkg"]


def test_scene_outputs_open_styled(tmp_path: Path) -> None:
    scene = write_synthetic_scene(tmp_path / "scene", 120, scar_density=1.0, cloud_fraction=0.0, dem=False)
    cfg = SceneConfig(scene=str(scene), model_uri="rule", out=str(tmp_path / "o"), progress=False, tile=64,
                      overlap=16, min_area_m2=0, threshold=0.4)  # fmt: skip
    res = run_scene(cfg, segmenter=RuleSegmenter(["B2", "B3", "B4", "B8", "B11", "B12"]), log=lambda _: None)
    with rasterio.open(res.paths["probability.tif"]) as ds:
        assert ds.descriptions == ("landslide probability",) and ds.units == ("probability 0-1",)
    with rasterio.open(res.paths["mask.tif"]) as ds:
        assert ds.colormap(1)[1][:3] == (227, 26, 28) and ds.units == ("class",)
        assert json.loads(ds.tags()[CLASSES_TAG]) == {"0": "no landslide", "1": "landslide"}
        assert ds.descriptions[0].startswith("landslide mask")
    labels = [i.get("label") for i in _qml(res.paths["probability.qml"]).iter("item")]
    assert "threshold 0.40" in labels
    assert [p.get("label") for p in _qml(res.paths["mask.qml"]).iter("paletteEntry")] == ["no landslide", "landslide"]
    styles = _styles(res.paths["landslides.gpkg"])
    assert [(s[0], s[4]) for s in styles] == [("landslides", 1)]
    ranges = ET.fromstring(styles[0][3]).findall(".//range")
    assert [r.get("label").split(" ")[0] for r in ranges] == ["low", "medium", "high"]
    assert float(ranges[1].get("lower")) == pytest.approx(0.6)  # thirds from the threshold 0.4 to 1
    assert set(res.summary["outputs"]) == {p.name for p in Path(cfg.out).iterdir()}


def test_susceptibility_rasters_open_styled(tmp_path: Path) -> None:
    xs, ys = GRID.cell_centres()
    p = np.random.default_rng(0).random(GRID.shape).astype(np.float32)
    path = tmp_path / "susceptibility.tif"
    with SusceptibilityRaster(GRID, path) as w:
        w.add(xs.ravel(), ys.ravel(), p.ravel())
    with rasterio.open(path) as ds:
        assert ds.descriptions == ("P(landslide)",) and ds.units == ("probability",)
    with rasterio.open(path.with_name("susceptibility_classes.tif")) as ds:
        cmap = ds.colormap(1)
        assert [cmap[i][:3] for i in range(1, 6)] == [
            tuple(int(c[j : j + 2], 16) for j in (1, 3, 5)) for c in CLASS_COLOURS
        ]
        assert json.loads(ds.tags()[CLASSES_TAG]) == {str(i + 1): n for i, n in enumerate(CLASS_NAMES)}
        assert ds.descriptions == ("landslide susceptibility class",)
    entries = _qml(path.with_name("susceptibility_classes.qml")).findall(".//paletteEntry")
    assert [e.get("label").split(" (")[0] for e in entries] == list(CLASS_NAMES)
    ramp = _qml(path.with_name("susceptibility.qml")).find(".//colorrampshader")
    assert ramp.get("colorRampType") == "DISCRETE" and len(ramp.findall("item")) == 5
    assert [p.name for p in w.style_paths] == ["susceptibility.qml", "susceptibility_classes.qml"]


def test_qml_helpers_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="4 breaks need 5"):
        breaks_qml([0.1, 0.2, 0.3, 0.4], ["#000000"] * 4, ["a"] * 4)
    ranges = ET.fromstring(landslides_by_confidence_qml(None)).findall(".//range")
    assert float(ranges[-1].get("upper")) == 1.0 and float(ranges[1].get("lower")) == pytest.approx(2 / 3)


def test_read_vector_skips_the_style_table(tmp_path: Path) -> None:
    from common.geo import read_vector

    feats = [Feature(shapely.box(0, 0, 10, 10), {"decision": 1})]
    out = write_gpkg(feats, tmp_path / "r.gpkg", "EPSG:32633", layer="regions", style_qml=regions_by_decision_qml())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pyogrio warns "More than one layer found" when it has to choose
        assert len(read_vector(out).geometries) == 1


def test_validation_polygons_open_by_status(tmp_path: Path) -> None:
    from common.geo import validation_by_status_qml
    from fusion.validation import STATUS_FALSE, STATUS_MATCHED, STATUS_MISSED

    statuses = (STATUS_MATCHED, STATUS_FALSE, STATUS_MISSED)
    feats = [Feature(shapely.box(i * 20, 0, i * 20 + 10, 10), {"status": s}) for i, s in enumerate(statuses)]
    out = write_gpkg(feats, tmp_path / "v.gpkg", "EPSG:32633", layer="validation", style_qml=validation_by_status_qml())
    assert pyogrio.read_info(out, layer="validation")["features"] == 3
    (style,) = _styles(out)
    assert style[0] == "validation" and style[4] == 1
    renderer = ET.fromstring(style[3]).find(".//renderer-v2")
    assert renderer.get("attr") == "status"
    assert [c.get("value") for c in renderer.iter("category")] == list(statuses)  # every status has a colour
