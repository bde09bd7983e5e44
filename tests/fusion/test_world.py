"""fusion.demo.world: paired regions as a georeferenced world that the georeferenced readers understand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

from common.geo import CLASSES_TAG, Grid, RasterOnGrid, class_names, read_vector
from fusion.demo.paired import PairedConfig, make_paired_regions
from fusion.demo.world import write_world
from imagery.data.bands import BANDS, L4S_BAND_MEANS
from imagery.data.sentinel2 import open_scene

FEATURES = ["slope_deg", "rain_7d_mm", "lithology", "land_cover"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    pairs = make_paired_regions(PairedConfig(n_regions=7, seed=5, size=16))
    return pairs, write_world(
        pairs.table, pairs.images, pairs.masks, tmp_path_factory.mktemp("w") / "world", features=FEATURES
    )


def _block(world, k: int) -> tuple[slice, slice]:
    cols, size, gap = 3, 16, 2  # ceil(sqrt(7)) = 3 columns
    r, c = gap + (k // cols) * (size + gap), gap + (k % cols) * (size + gap)
    return slice(r, r + size), slice(c, c + size)


def test_rasters_carry_crs_transform_nodata_and_the_patches(world) -> None:
    pairs, w = world
    assert w.grid.width == w.grid.height == 3 * 18 + 2
    for path in [*(w.scene / f"B{i:02d}.tif" for i in range(1, 13)), w.dem, *w.factors.values()]:
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32633 and src.nodata is not None and src.transform.a == 10.0, path
    scene = open_scene(w.scene)
    assert scene.date == "2024-06-01" and set(BANDS[:12]) <= set(scene.bands)
    with rasterio.open(w.scene / "B04.tif") as src:
        b4 = src.read(1)
    rows, cols = _block(w, 4)
    dn = pairs.images[4, BANDS.index("B4")] * L4S_BAND_MEANS[BANDS.index("B4")]
    np.testing.assert_allclose(b4[rows, cols], np.clip(np.round(dn), 1, None), atol=0.5)
    assert (b4[0, :] == 0).all(), "the gaps between regions are nodata"
    with rasterio.open(w.dem) as src:
        dem = src.read(1)
    np.testing.assert_allclose(dem[rows, cols], pairs.images[4, 13] * L4S_BAND_MEANS[13], rtol=1e-5)


def test_factor_rasters_paint_each_region_and_name_their_classes(world) -> None:
    pairs, w = world
    with RasterOnGrid(w.factors["slope_deg"], w.grid, "nearest", 1) as src:
        slope = src.read()
    with RasterOnGrid(w.factors["lithology"], w.grid, "nearest", 1) as src:
        lith, legend = src.read(), class_names(src.tags, w.factors["lithology"])
    assert legend is not None and set(legend.values()) == set(pairs.table["lithology"].astype(str))
    for k in range(7):
        rows, cols = _block(w, k)
        assert np.allclose(slope[rows, cols], pairs.table["slope_deg"].iloc[k], rtol=1e-6)
        assert legend[int(lith[rows, cols][0, 0])] == str(pairs.table["lithology"].iloc[k])
    assert np.isnan(slope[0, 0]) and np.isnan(lith[0, 0])
    with rasterio.open(w.factors["land_cover"]) as src:
        assert CLASSES_TAG in src.tags() and src.nodata == 255


def test_regions_and_inventory_open_as_vector_files(world) -> None:
    pairs, w = world
    assert pyogrio.read_info(w.regions)["crs"].endswith("32633")
    regions = read_vector(w.regions)
    assert len(regions.geometries) == 7
    assert regions.table["region_id"].tolist() == [str(i) for i in pairs.table["region_id"]]
    assert all(abs(g.area - 160.0 * 160.0) < 1e-6 for g in regions.geometries)
    gj = json.loads(Path(w.regions_geojson).read_text(encoding="utf-8"))
    lon, lat = gj["features"][0]["geometry"]["coordinates"][0][0]
    assert 13 < lon < 15 and 46 < lat < 47.5, "UTM 33N near (400000, 5180000) is in southern Austria"
    inv = read_vector(w.inventory)
    slid = {str(pairs.table["region_id"].iloc[k]) for k in range(7) if pairs.masks[k].any()}
    assert set(inv.table["region_id"]) == slid
    area = sum(g.area for g in inv.geometries)
    assert area == pytest.approx(pairs.masks.sum() * 100.0)
    assert Grid.from_raster(w.dem) == w.grid
