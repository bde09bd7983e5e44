"""common.geo.vector: polygonize with geodesic areas, GeoJSON/GPKG writing, read_vector, rasterize, distance_to."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from pyproj import Geod, Transformer

from common.cli import UserError
from common.geo import (
    Feature,
    distance_to,
    geodesic_area_m2,
    pixel_size_m,
    polygonize,
    rasterize,
    read_vector,
    write_geojson,
    write_gpkg,
)
from tests.conftest import shared_dataset
from tests.geo.helpers import UTM29, geo_grid, utm_grid


def _quadrangle_area_m2(lon1: float, lon2: float, lat1: float, lat2: float) -> float:
    """Exact area of a lon/lat quadrangle on the WGS84 ellipsoid (authalic-latitude formula)."""
    a, f = 6378137.0, 1 / 298.257223563
    b, e = a * (1 - f), np.sqrt(f * (2 - f))

    def q(lat: float) -> float:
        s = np.sin(np.radians(lat))
        return s / (1 - e * e * s * s) + np.log((1 + e * s) / (1 - e * s)) / (2 * e)

    return float(b * b * np.radians(lon2 - lon1) / 2 * (q(lat2) - q(lat1)))


def _square_mask(grid, r0: int, c0: int, n: int) -> np.ndarray:
    m = np.zeros(grid.shape, np.uint8)
    m[r0 : r0 + n, c0 : c0 + n] = 1
    return m


# -- polygonize and areas -------------------------------------------------------------------------
def test_polygonize_square_on_a_10m_utm_grid_is_10000_m2() -> None:
    grid = utm_grid(width=40, height=30, res=10.0)
    probs = np.zeros(grid.shape)
    probs[5:15, 8:18] = np.linspace(0.5, 0.9, 100).reshape(10, 10)
    feats = polygonize(_square_mask(grid, 5, 8, 10), grid, values=probs)
    assert len(feats) == 1
    f = feats[0]
    assert f.geometry.geom_type == "Polygon" and f.geometry.area == pytest.approx(10_000.0)  # planar, CRS units
    p = f.properties
    assert p["id"] == 1 and p["n_pixels"] == 100
    assert p["area_m2"] == pytest.approx(10_000.0, rel=0.005)
    assert p["mean_prob"] == pytest.approx(0.7) and p["max_prob"] == pytest.approx(0.9)
    x, y = grid.transform @ (13.0, 10.0)  # the square's centre
    lon, lat = Transformer.from_crs(UTM29, "EPSG:4326", always_xy=True).transform(x, y)
    assert p["centroid_lon"] == pytest.approx(lon, abs=1e-9) and p["centroid_lat"] == pytest.approx(lat, abs=1e-9)
    assert -9.5 < p["centroid_lon"] < -8.5 and 24.5 < p["centroid_lat"] < 25.5  # lon/lat, not swapped


@pytest.mark.parametrize("res", [1e-4, 0.05])
def test_polygonize_square_on_a_geographic_grid_has_its_true_geodesic_area(res: float) -> None:
    grid = geo_grid(width=20, height=20, res=res, lat0=45.0 + 10 * res)
    f = polygonize(_square_mask(grid, 5, 5, 10), grid)[0]
    left, bottom, right, top = f.geometry.bounds
    exact = _quadrangle_area_m2(left, right, bottom, top)
    assert f.properties["area_m2"] == pytest.approx(exact, rel=1e-7)
    # 0.5-degree edges along parallels need densifying: without it the geodesic edges cut the corners
    if res == 0.05:
        raw = abs(Geod(ellps="WGS84").geometry_area_perimeter(shapely.orient_polygons(f.geometry))[0])
        assert abs(raw / exact - 1) > 1e-6


def test_polygonize_holes_connectivity_and_min_area() -> None:
    grid = utm_grid(width=30, height=30, res=10.0)
    m = _square_mask(grid, 2, 2, 6)
    m[4:6, 4:6] = 0  # a 2x2 hole: 32 pixels remain
    m[20, 20] = m[21, 21] = 1  # two pixels touching at a corner
    eight = polygonize(m, grid)
    assert [f.properties["n_pixels"] for f in eight] == [32, 2]
    assert len(eight[0].geometry.interiors) == 1 and eight[0].properties["area_m2"] == pytest.approx(3200, rel=0.005)
    assert eight[1].geometry.is_valid and eight[1].properties["area_m2"] == pytest.approx(200, rel=0.005)
    four = polygonize(m, grid, connectivity=4)
    assert [f.properties["n_pixels"] for f in four] == [32, 1, 1]
    big = polygonize(m, grid, min_area_m2=500.0, connectivity=4)
    assert len(big) == 1 and big[0].properties["id"] == 1
    assert [f.properties["id"] for f in polygonize(m, grid, connectivity=4)] == [1, 2, 3]
    assert polygonize(np.zeros(grid.shape, np.uint8), grid) == []
    with pytest.raises(ValueError, match="does not match grid shape"):
        polygonize(m[:5], grid)


def test_geodesic_area_of_a_km_square_in_utm_and_a_polygon_with_a_hole() -> None:
    square = shapely.box(500_000, 2_750_000, 501_000, 2_751_000)  # on zone 29's central meridian
    assert geodesic_area_m2(square, UTM29) == pytest.approx(1e6, rel=1e-3)
    holed = shapely.Polygon(
        square.exterior.coords, [shapely.box(500_100, 2_750_100, 500_600, 2_750_600).exterior.coords]
    )
    assert geodesic_area_m2(holed, UTM29) == pytest.approx(0.75e6, rel=1e-3)
    assert geodesic_area_m2(shapely.Point(500_000, 2_750_000), UTM29) == 0.0


# -- writing --------------------------------------------------------------------------------------
def _features(grid):
    m = _square_mask(grid, 3, 3, 5)
    m[12, 12] = m[13, 13] = 1
    return polygonize(m, grid, values=np.full(grid.shape, 0.25))


def test_geojson_is_rfc7946_lonlat_and_reopens_with_pyogrio(tmp_path) -> None:
    grid = utm_grid(width=20, height=20, res=10.0)
    feats = _features(grid)
    feats[0].properties["label"] = "landslide"
    out = write_geojson(feats, tmp_path / "det.geojson", grid.crs)
    assert [p.name for p in tmp_path.iterdir()] == ["det.geojson"]
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc and doc["name"] == "det"
    ring = doc["features"][0]["geometry"]["coordinates"][0]
    lons, lats = zip(*ring, strict=True)
    assert all(-9.5 < lo < -8.5 for lo in lons) and all(24.5 < la < 25.5 for la in lats)  # lon first
    assert shapely.Polygon(ring).exterior.is_ccw  # right-hand rule
    assert doc["features"][0]["properties"]["label"] == "landslide"
    assert doc["features"][1]["properties"]["label"] is None
    info = pyogrio.read_info(out)
    assert info["crs"] == "EPSG:4326" and info["features"] == 2
    back = read_vector(out)
    assert back.crs == "EPSG:4326"
    assert list(back.table["n_pixels"]) == [25, 2] and back.table["mean_prob"].tolist() == [0.25, 0.25]
    # 7 decimals of a degree (~1 cm) on a 50 m square
    assert geodesic_area_m2(back.geometries[0], back.crs) == pytest.approx(feats[0].properties["area_m2"], rel=5e-4)
    # no detections: an empty, valid FeatureCollection
    empty = json.loads(write_geojson([], tmp_path / "none.geojson", grid.crs).read_text())
    assert empty["type"] == "FeatureCollection" and empty["features"] == []


def test_gpkg_keeps_the_data_crs_and_is_written_atomically(tmp_path, monkeypatch) -> None:
    grid = utm_grid(width=20, height=20, res=10.0)
    feats = _features(grid)
    out = write_gpkg(feats, tmp_path / "det.gpkg", grid.crs, layer="landslides")
    info = pyogrio.read_info(out, layer="landslides")
    assert info["crs"] == "EPSG:32629" and info["features"] == 2 and info["geometry_type"] == "MultiPolygon"
    back = read_vector(out, layer="landslides")
    assert back.crs == UTM29
    assert shapely.equals(back.geometries[0], shapely.MultiPolygon([feats[0].geometry]))
    assert back.table["id"].tolist() == [1, 2]
    # a failing rewrite leaves the old file and no temporary behind
    before = out.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pyogrio.raw, "write", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_gpkg(feats[:1], out, grid.crs)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["det.gpkg"]


def test_gpkg_layers_in_one_file_all_or_nothing(tmp_path, monkeypatch) -> None:
    """Several layers (an empty one too) in one GeoPackage, each with its default style; a failure on the second
    layer leaves no file at all."""
    import sqlite3
    from contextlib import closing

    from common.geo import rejected_by_kind_qml, write_gpkg_layers

    grid = utm_grid(width=20, height=20, res=10.0)
    feats = _features(grid)
    layers = {"landslides": (feats, rejected_by_kind_qml("id")), "rejected": (feats[:1], None), "none": ([], None)}
    out = write_gpkg_layers(tmp_path / "two.gpkg", grid.crs, layers)
    assert [n for n, _g in pyogrio.list_layers(out)][:3] == ["landslides", "rejected", "none"]
    assert [pyogrio.read_info(out, layer=n)["features"] for n in layers] == [2, 1, 0]
    assert pyogrio.read_info(out, layer="rejected")["crs"] == "EPSG:32629"
    with closing(sqlite3.connect(out)) as con:
        assert con.execute("SELECT f_table_name FROM layer_styles").fetchall() == [("landslides",)]
    real, calls = pyogrio.raw.write, []

    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(pyogrio.raw, "write", second_fails)
    with pytest.raises(RuntimeError, match="disk full"):
        write_gpkg_layers(tmp_path / "new.gpkg", grid.crs, layers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.gpkg"]


# -- reading --------------------------------------------------------------------------------------
def test_read_vector_csv_lonlat_with_where_and_to_crs(tmp_path) -> None:
    csv = tmp_path / "inv.csv"
    csv.write_text(
        "id,Year_obs,Longitude,Latitude,size\n1,2001,-9.0,24.9,small\n2,2007,-8.9,24.8,large\n3,2012,,,large\n"
    )
    with pytest.warns(UserWarning, match="dropped 1 of 3 rows without a geometry"):
        data = read_vector(csv)
    assert data.crs == "EPSG:4326" and len(data.geometries) == 2
    assert data.geometries[0].x == pytest.approx(-9.0) and data.geometries[0].y == pytest.approx(24.9)
    assert data.table["Year_obs"].tolist() == [2001, 2007]  # types detected, coordinate columns kept
    with pytest.warns(UserWarning, match="dropped 1 of 2 rows"):
        recent = read_vector(csv, where="Year_obs>=2005 AND size = 'large'", to_crs=UTM29)
    assert len(recent.geometries) == 1 and recent.crs == UTM29 and recent.table["id"].tolist() == [2]
    x, y = Transformer.from_crs("EPSG:4326", UTM29, always_xy=True).transform(-8.9, 24.8)
    assert recent.geometries[0].x == pytest.approx(x) and recent.geometries[0].y == pytest.approx(y)
    with pytest.raises(UserError, match="no features in .*inv.csv match where='Year_obs>=2050'"):
        read_vector(csv, where="Year_obs>=2050")
    with pytest.raises(UserError, match="cannot read vector file .*inv.csv with where"):
        read_vector(csv, where="no_such_column > 1")


def test_read_vector_csv_xy_needs_a_crs(tmp_path) -> None:
    csv = tmp_path / "xy.csv"
    csv.write_text("x,y,v\n500000,2750000,1\n501000,2751000,2\n")
    with pytest.raises(UserError, match="xy.csv has coordinates in x/y but no CRS"):
        read_vector(csv)
    data = read_vector(csv, crs=UTM29, to_crs="EPSG:4326")
    assert data.crs == "EPSG:4326" and -9.01 < data.geometries[0].x < -8.99
    semi = tmp_path / "semi.csv"
    semi.write_text("id;LAT;LON\n7;60.1;10.5\n")  # semicolons and upper-case names, lat before lon
    pt = read_vector(semi).geometries[0]
    assert (pt.x, pt.y) == (10.5, 60.1)
    other = tmp_path / "nocoords.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="no coordinate columns"):
        read_vector(other)


def test_read_vector_errors_name_the_file(tmp_path) -> None:
    missing = tmp_path / "nope.gpkg"
    with pytest.raises(UserError, match="vector file not found") as exc:
        read_vector(missing)
    assert str(missing) in str(exc.value)
    # a shapefile without .prj has no CRS
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        pyogrio.raw.write(
            tmp_path / "pts.shp",
            shapely.to_wkb(np.array([shapely.Point(1, 2)])),
            [np.array([1])],
            ["v"],
            driver="ESRI Shapefile",
            geometry_type="Point",
            crs=None,
        )
    with pytest.raises(UserError, match="pts.shp has no CRS"):
        read_vector(tmp_path / "pts.shp")
    assert read_vector(tmp_path / "pts.shp", crs=UTM29).crs == UTM29
    junk = tmp_path / "junk.geojson"
    junk.write_text("{not json")
    with pytest.raises(UserError, match="cannot read vector file") as exc:
        read_vector(junk)
    assert "\n" not in str(exc.value)


@pytest.mark.real_data
def test_read_real_nasa_glc_inventory_csv() -> None:
    path = shared_dataset("nasa_glc") / "Global_Landslide_Catalog_Export.csv"
    data = read_vector(path, where="fatality_count >= 100")
    assert data.crs == "EPSG:4326" and 10 < len(data.geometries) < 500
    assert (data.table["fatality_count"] >= 100).all()
    xy = shapely.get_coordinates(data.geometries)
    assert np.allclose(xy[:, 0], data.table["longitude"]) and np.allclose(xy[:, 1], data.table["latitude"])


# -- rasterize and distances ----------------------------------------------------------------------
def test_rasterize_polygons_and_all_touched() -> None:
    grid = utm_grid(width=10, height=10, res=10.0, x0=0.0, y0=100.0)
    box = shapely.box(20, 30, 60, 70)  # exactly pixels rows 3..6, cols 2..5
    m = rasterize([box], grid)
    assert m.dtype == np.uint8 and m.sum() == 16 and m[3:7, 2:6].all()
    slim = shapely.box(21, 31, 24, 34)  # inside one pixel, not covering its centre (25, 35)
    assert rasterize([slim], grid).sum() == 0 and rasterize([slim], grid, all_touched=True).sum() == 1
    assert rasterize([Feature(box, {})], grid).sum() == 16 and rasterize([], grid).sum() == 0


def test_rasterize_with_a_metre_buffer_in_utm_and_in_a_geographic_grid() -> None:
    grid = utm_grid(width=101, height=101, res=10.0, x0=0.0, y0=1010.0)
    centre = shapely.Point(505.0, 505.0)
    disc = rasterize([centre], grid, buffer_m=200.0)
    assert disc.sum() * 100 == pytest.approx(np.pi * 200**2, rel=0.03)
    # geographic grid at 60 N: pixels ~5.6 x 11 m; a 300 m buffer must still be a ground circle
    geo = geo_grid(width=121, height=61, res=1e-4, lon0=10.0, lat0=60.003)
    dy, dx = pixel_size_m(geo)
    x, y = geo.cell_centres(30, 60)
    disc = rasterize([shapely.Point(float(x), float(y))], geo, buffer_m=300.0)
    area = float((disc * (dy * dx)[:, None]).sum())
    assert area == pytest.approx(np.pi * 300**2, rel=0.03)
    rows, cols = np.nonzero(disc)
    assert (cols.max() - cols.min() + 1) * dx.mean() == pytest.approx(600, rel=0.05)  # round on the ground
    assert (rows.max() - rows.min() + 1) * dy.mean() == pytest.approx(600, rel=0.05)
    # geometries given in another CRS are transformed to the grid's
    lonlat = rasterize([shapely.Point(float(x), float(y))], utm_grid(), crs="EPSG:4326")
    assert lonlat.sum() == 0  # far away from the UTM test grid


def test_distance_to_on_a_projected_grid_is_exact_between_cell_centres() -> None:
    grid = utm_grid(width=30, height=20, res=10.0, x0=0.0, y0=200.0)
    x, y = grid.cell_centres(5, 7)
    d = distance_to([shapely.Point(float(x), float(y))], grid)
    assert d.dtype == np.float32 and d[5, 7] == 0
    rows, cols = np.mgrid[0:20, 0:30]
    np.testing.assert_allclose(d, np.hypot((rows - 5) * 10.0, (cols - 7) * 10.0), rtol=1e-6)
    line = shapely.LineString([(0, 105), (300, 105)])  # along row 9's centre line
    d = distance_to([line], grid)
    np.testing.assert_allclose(d[:, 0], np.abs(np.arange(20) - 9) * 10.0)
    with pytest.raises(UserError, match="none of the features falls on the"):
        distance_to([shapely.Point(1e6, 1e6)], grid)


def test_distance_to_on_a_geographic_grid_is_geodesic() -> None:
    geo = geo_grid(width=80, height=60, res=1e-3, lon0=10.0, lat0=60.03)
    x, y = geo.cell_centres(30, 40)
    d = distance_to([shapely.Point(float(x), float(y))], geo)
    geod = Geod(ellps="WGS84")
    for r, c in ((30, 0), (0, 40), (59, 79), (10, 70)):
        cx, cy = geo.cell_centres(r, c)
        _, _, true = geod.inv(float(x), float(y), float(cx), float(cy))
        assert d[r, c] == pytest.approx(true, rel=1e-5)
    assert d[30, 0] < d[0, 40]  # 40 columns at 60 N (~2.2 km) are shorter than 30 rows (~3.3 km)
