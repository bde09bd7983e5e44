"""The synthetic region table: columns, units, determinism and the documented mechanism."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tabular.synthetic import FEATURE_COLUMNS, LITHOLOGY, factor_of_safety, make_region_table


@pytest.fixture(scope="module")
def table():
    return make_region_table(3000, seed=3, return_latent=True)


def test_columns_ranges_and_rate(table):
    expected = {"region_id", "lon", "lat", "landslide", *FEATURE_COLUMNS}
    assert expected <= set(table.columns)
    assert table["region_id"].is_unique
    assert table["slope_deg"].between(0, 60).all()
    assert table["soil_moisture"].between(0.0, 0.6).all()
    assert table["ndvi"].between(-0.1, 0.95).all()
    assert (table["rain_7d_mm"] <= table["rain_30d_mm"]).all()
    assert (table[["dist_river_m", "dist_road_m", "relief_m"]] >= 0).all().all()
    assert set(table["lithology"].astype(str)) <= set(LITHOLOGY)
    assert 0.20 <= table["landslide"].mean() <= 0.35


def test_deterministic_and_seed_dependent():
    a = make_region_table(200, seed=1)
    b = make_region_table(200, seed=1)
    c = make_region_table(200, seed=2)
    assert a.equals(b)
    assert not a["slope_deg"].equals(c["slope_deg"])
    assert not any(col.startswith("latent_") for col in a.columns)


def test_latent_columns_follow_the_mechanism(table):
    latent = [c for c in table.columns if c.startswith("latent_")]
    assert {"latent_susceptibility", "latent_trigger", "latent_p"} <= set(latent)
    assert np.allclose(table["latent_susceptibility"], -np.log(table["latent_fs"]))
    assert np.allclose(table["latent_p"], 1 / (1 + np.exp(-table["latent_logit"])))
    # the label is drawn from latent_p: the hidden probability ranks the labels well
    assert roc_auc_score(table["landslide"], table["latent_p"]) > 0.8


def test_physics_directions(table):
    steep = table["slope_deg"] > table["slope_deg"].quantile(0.75)
    flat = table["slope_deg"] < table["slope_deg"].quantile(0.25)
    assert table.loc[steep, "landslide"].mean() > table.loc[flat, "landslide"].mean() + 0.1
    wet = table["rain_7d_mm"] > table["rain_7d_mm"].quantile(0.75)
    dry = table["rain_7d_mm"] < table["rain_7d_mm"].quantile(0.25)
    assert table.loc[wet, "landslide"].mean() > table.loc[dry, "landslide"].mean() + 0.1
    weak = table["lithology"].astype(str).isin(["shale", "volcanic_ash"])
    strong = table["lithology"].astype(str).isin(["granite", "limestone"])
    assert table.loc[weak, "landslide"].mean() > table.loc[strong, "landslide"].mean()


def test_factor_of_safety_decreases_with_slope_and_wetness():
    slope = np.array([10.0, 30.0, 45.0])
    one = np.ones(3)
    dry = factor_of_safety(slope, 5 * one, 30 * one, 1.5 * one, 0 * one)
    wet = factor_of_safety(slope, 5 * one, 30 * one, 1.5 * one, one)
    assert np.all(np.diff(dry) < 0)
    assert np.all(wet < dry)


def test_rejects_bad_size():
    with pytest.raises(ValueError, match="n_regions"):
        make_region_table(0)
