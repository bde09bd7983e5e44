"""StripPolygonizer: a mask fed in strips gives exactly what polygonize gives on the whole mask."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from scipy import ndimage

from common.geo import Grid, StripPolygonizer, polygonize


@pytest.mark.parametrize(
    "crs,transform",
    [("EPSG:32629", Affine(10, 0, 500000, 0, -10, 2750000)), ("EPSG:4326", Affine(1e-4, 0, 6.5, 0, -1e-4, 0.5))],
)
@pytest.mark.parametrize("connectivity", [8, 4])
@pytest.mark.parametrize("min_area", [0.0, 500.0, 3000.0])
def test_strips_equal_whole_mask(crs: str, transform: Affine, connectivity: int, min_area: float) -> None:
    rng = np.random.default_rng(0)
    grid = Grid(crs, transform, 97, 83)
    mask = (ndimage.gaussian_filter(rng.random((83, 97)), 2) > 0.52).astype(np.uint8)
    values = rng.random((83, 97))
    whole = polygonize(mask, grid, values=values, min_area_m2=min_area, connectivity=connectivity)
    sp = StripPolygonizer(grid, min_area_m2=min_area, connectivity=connectivity)
    row = 0
    for h in (7, 1, 20, 13, 30, 12):  # uneven strips, one a single row
        sp.add(mask[row : row + h], row, values[row : row + h])
        row += h
    strips = sp.features()
    assert len(whole) == len(strips) > 3
    for a, b in zip(whole, strips, strict=True):
        assert a.properties.keys() == b.properties.keys()
        for key, value in a.properties.items():
            assert b.properties[key] == pytest.approx(value, rel=1e-9), key
        assert a.geometry.symmetric_difference(b.geometry).area < 1e-9 * a.geometry.area


def test_strips_must_follow_each_other() -> None:
    grid = Grid("EPSG:32629", Affine(10, 0, 0, 0, -10, 1000), 10, 10)
    sp = StripPolygonizer(grid)
    sp.add(np.zeros((4, 10), np.uint8), 0)
    with pytest.raises(ValueError, match="next strip at row 4"):
        sp.add(np.zeros((4, 10), np.uint8), 5)
