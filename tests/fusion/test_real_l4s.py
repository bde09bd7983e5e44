"""End to end on the 11 real labelled Landslide4Sense patches (skips where ../shared/data is absent).

Regions = patches; label = the patch's mask has a landslide pixel; tabular features are derived from
the patch (fusion.patch_features, never from the mask). Train tabular (2-fold CV) and a tiny imagery
model (2-fold cross-fitting), fit the stacker on both OOF tables, score and fuse every region. The set
is tiny, so only validity is asserted (ranges, columns, no NaN), not a score.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fusion.patch_features import PATCH_FEATURES, patch_region_table
from fusion.scoring import ALL_COLUMNS
from tests.conftest import shared_dataset


@pytest.mark.real_data
def test_real_l4s_regions_train_score_fuse(tmp_path: Path, tracking_uri: str) -> None:
    from fusion.config import ScoreRegionsConfig, TrainFusionConfig
    from imagery.data import load_patches
    from pipelines import score_regions, train_fusion, train_tabular
    from pipelines.quickstart import QuickstartConfig, train_imagery_crossfit
    from tabular.config import CVConfig, LGBMParams, TrainTabularConfig

    root = shared_dataset("landslide4sense_camduc")
    patches = load_patches(root, layout="plain", require_masks=True)
    assert len(patches) == 11
    table = patch_region_table(patches.images, patches.ids, patches.masks)
    assert table["landslide"].sum() == 9
    regions = tmp_path / "regions.csv"
    table.to_csv(regions, index=False)

    tab = train_tabular.COMMAND.call(
        ["--tracking-uri", tracking_uri, "--experiment", "real", "--no-register"],
        config=TrainTabularConfig(
            data=str(regions),
            id_column="region_id",
            seed=0,
            experiment="real",
            tracking_uri=tracking_uri,
            cv=CVConfig(n_folds=2),
            lgbm=LGBMParams(min_data_in_leaf=2, num_boost_round=20, early_stopping_rounds=0, num_threads=1),
        ),
        log=lambda _l: None,
    )
    cfg = QuickstartConfig(
        imagery_width=2, imagery_epochs=1, imagery_channels=14, imagery_batch_size=4, experiment="real", seed=0
    )
    img = train_imagery_crossfit(cfg, patches)
    fus = train_fusion.COMMAND.call(
        ["--tabular-run", tab.run_id, "--imagery-run", img.run_id, "--experiment", "real", "--no-register"],
        config=TrainFusionConfig(tab.run_id, img.run_id, cv=2, experiment="real", tracking_uri=tracking_uri),
        log=lambda _l: None,
    )
    out = tmp_path / "scores.csv"
    info = score_regions.COMMAND.call(
        ["--regions", str(regions), "--out", str(out), "--tabular-model", tab.model_uri, "--experiment", "real"],
        config=ScoreRegionsConfig(
            regions=str(regions),
            out=str(out),
            images=str(root),
            tabular_model=tab.model_uri,
            imagery_model=img.model_uris[0],
            fusion_model=fus.fuser_uri,
            progress=False,
            masks_dir=str(tmp_path / "masks"),
            experiment="real",
            tracking_uri=tracking_uri,
        ),
        log=lambda _l: None,
    )
    assert info.scored == 11
    df = pd.read_csv(out)
    assert list(df.columns) == list(ALL_COLUMNS)
    assert sorted(df["region_id"]) == sorted(patches.ids.tolist())
    assert (df["evidence"] == "both").all()
    for c in ("p_tabular", "p_imagery", "p_fused"):
        assert df[c].notna().all() and df[c].between(0, 1).all(), c
    assert df["decision"].isin([0, 1]).all() and df["reason"].str.len().gt(0).all()
    assert df["img_largest_cc_m2"].ge(0).all()
    assert set(PATCH_FEATURES) <= set(table.columns)
