"""Geospatial I/O: the project's single home for raster, vector and terrain handling.

``imagery``, ``tabular`` and ``fusion`` call this package instead of rasterio/pyproj/pyogrio directly.

* :mod:`common.geo.grid`: :class:`Grid` (CRS + transform + size), true pixel sizes in metres,
  coverage checks, block and tile windows.
* :mod:`common.geo.raster`: :class:`RasterOnGrid` (read any raster onto a grid, float32 with NaN
  nodata), :func:`read_raster`, :class:`CogWriter` / :func:`write_cog` / :func:`reproject_to_cog`
  (streaming, atomic Cloud-Optimized GeoTIFF output).
* :mod:`common.geo.terrain`: slope, aspect, curvatures, TPI, TRI, roughness, D8 flow accumulation
  and TWI from a DEM with true metres per pixel; :func:`terrain_window` for block-wise processing.
* :mod:`common.geo.vector`: :func:`polygonize` with geodesic areas (:class:`StripPolygonizer` for masks
  streamed strip by strip), GeoJSON/GeoPackage writers,
  :func:`read_vector` (GeoPackage/shapefile/GeoJSON/CSV), :func:`rasterize`, :func:`distance_to`,
  :func:`buffer_m` (metres on the ground in any CRS).
* :mod:`common.geo.zonal`: a region's cells on a grid (:func:`zone_of`, shares of its true extent, the
  part off the grid counted as missing) and zonal means / majority classes (:class:`ZonalRaster`).
* :mod:`common.geo.style`: styles QGIS applies on load: ``.qml`` sidecars for probability and class
  rasters, default styles in a GeoPackage's ``layer_styles`` table (regions by decision, landslides by
  confidence).

Conventions: arrays are ``(rows, cols)`` or ``(bands, rows, cols)``, row 0 north; nodata in float
arrays is NaN; coordinates are (x, y) / (lon, lat) order; distances and areas are true metres.
User errors raise one-line :class:`common.cli.UserError` naming the file or value.
"""

from __future__ import annotations

from common.geo.client import ClientSources, client_reads, host_allowed, http_timeouts, inspect_upload
from common.geo.grid import Grid, coverage_fraction, iter_windows, normalize_crs, pixel_size_m, tile_windows
from common.geo.raster import (
    CLASSES_TAG,
    CogWriter,
    RasterData,
    RasterOnGrid,
    block_cache,
    class_names,
    read_raster,
    reproject_to_cog,
    write_cog,
)
from common.geo.style import (
    classes_qml,
    landslides_by_confidence_qml,
    probability_qml,
    regions_by_decision_qml,
    rejected_by_kind_qml,
    validation_by_status_qml,
    write_layer_style,
    write_qml,
)
from common.geo.terrain import (
    aspect,
    flow_accumulation,
    plan_curvature,
    profile_curvature,
    roughness,
    slope,
    terrain_window,
    tpi,
    tri,
    twi,
)
from common.geo.vector import (
    Feature,
    StripPolygonizer,
    VectorData,
    buffer_m,
    distance_to,
    geodesic_area_m2,
    polygonize,
    rasterize,
    read_vector,
    to_lonlat,
    transform_geometries,
    utm_crs,
    write_geojson,
    write_gpkg,
    write_gpkg_layers,
)
from common.geo.zonal import ZonalRaster, Zone, zonal_majority, zonal_mean, zone_of

__all__ = [
    "ClientSources",
    "client_reads",
    "host_allowed",
    "http_timeouts",
    "inspect_upload",
    "Grid",
    "normalize_crs",
    "pixel_size_m",
    "coverage_fraction",
    "iter_windows",
    "tile_windows",
    "RasterOnGrid",
    "RasterData",
    "CLASSES_TAG",
    "class_names",
    "read_raster",
    "CogWriter",
    "block_cache",
    "write_cog",
    "reproject_to_cog",
    "slope",
    "aspect",
    "plan_curvature",
    "profile_curvature",
    "tpi",
    "tri",
    "roughness",
    "flow_accumulation",
    "twi",
    "terrain_window",
    "Feature",
    "VectorData",
    "polygonize",
    "StripPolygonizer",
    "geodesic_area_m2",
    "to_lonlat",
    "transform_geometries",
    "utm_crs",
    "write_geojson",
    "write_gpkg",
    "write_gpkg_layers",
    "read_vector",
    "rasterize",
    "distance_to",
    "buffer_m",
    "Zone",
    "ZonalRaster",
    "zone_of",
    "zonal_mean",
    "zonal_majority",
    "probability_qml",
    "classes_qml",
    "regions_by_decision_qml",
    "validation_by_status_qml",
    "landslides_by_confidence_qml",
    "rejected_by_kind_qml",
    "write_qml",
    "write_layer_style",
]
