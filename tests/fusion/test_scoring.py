"""Fused region scoring: columns, fallbacks, bad input, resumable output (fake models, no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusion.regions import read_region_table
from fusion.scoring import ALL_COLUMNS, RegionScorer, ScoringConfig, fingerprint_path, partial_path, score_table
from fusion.stacking import StackingFuser
from imagery.data import write_image
from tests.fusion.fakes import FakeSegmenter, FakeTabular


def _fuser() -> StackingFuser:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    pt = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 300), 0.01, 0.99)
    pi = np.clip(0.2 + 0.6 * y + rng.normal(0, 0.2, 300), 0.01, 0.99)
    return StackingFuser().fit(pd.DataFrame({"p_tabular": pt, "p_imagery": pi}), y)


def _regions(tmp_path: Path, n: int = 10) -> tuple[pd.DataFrame, Path]:
    img_dir = tmp_path / "l4s" / "img"
    for rid in range(n):
        img = np.zeros((14, 16, 16), dtype=np.float32)
        if rid % 2 == 0:
            img[0, 4:8, 4:8] = 0.9  # a scar of 16 px
        write_image(img_dir / f"image_{rid}.h5", img)
    table = pd.DataFrame(
        {"region_id": range(n), "slope_deg": np.linspace(5, 50, n), "rain_7d_mm": 10.0, "landslide": 0}
    )
    return table, tmp_path / "l4s"


def test_scores_every_region_with_all_columns(tmp_path: Path) -> None:
    table, images = _regions(tmp_path)
    scorer = RegionScorer(FakeTabular(), FakeSegmenter(), _fuser(), ScoringConfig(batch_size=3))
    out = tmp_path / "scores.csv"
    info = score_table(table, scorer, out, images, progress=False)
    df = pd.read_csv(out)
    assert list(df.columns) == list(ALL_COLUMNS)
    assert df["region_id"].tolist() == list(range(10)) and info.scored == 10
    assert (df["evidence"] == "both").all()
    for c in ("p_tabular", "p_imagery", "p_fused"):
        assert df[c].between(0, 1).all()
    assert df.loc[df.region_id % 2 == 0, "img_largest_cc_px"].eq(16).all()
    assert df.loc[df.region_id % 2 == 1, "img_n_components"].eq(0).all()
    assert df["top_features"].str.startswith("slope_deg(+0.50)").all()
    assert Path(df.loc[0, "mask_path"]).is_file()
    assert not partial_path(out).exists()
    # imagery sees a scar where terrain is flat: a disagreement with a reason
    row0 = df.loc[0]
    assert not row0["agree"] and "imagery sees a scar" in row0["reason"]


def test_missing_and_unreadable_images_fall_back(tmp_path: Path) -> None:
    table, images = _regions(tmp_path, 4)
    (images / "img" / "image_1.h5").unlink()
    (images / "img" / "image_2.h5").write_bytes(b"not hdf5")
    out = tmp_path / "s.csv"
    score_table(table, RegionScorer(FakeTabular(), FakeSegmenter(), _fuser()), out, images, progress=False)
    df = pd.read_csv(out).set_index("region_id")
    assert df.loc[1, "evidence"] == "tabular_only" and "image_1.h5" in df.loc[1, "note"]
    assert df.loc[2, "evidence"] == "tabular_only" and "unreadable" in df.loc[2, "note"]
    assert df.loc[0, "evidence"] == "both"
    assert df["p_fused"].notna().all()


def test_strict_images_is_an_error_naming_region_and_file(tmp_path: Path) -> None:
    table, images = _regions(tmp_path, 4)
    table["image"] = [f"img/image_{i}.h5" for i in range(4)]
    (images / "img" / "image_3.h5").unlink()
    scorer = RegionScorer(FakeTabular(), FakeSegmenter(), _fuser(), ScoringConfig(strict_images=True))
    out = tmp_path / "s.csv"
    with pytest.raises(ValueError, match=r"region 3: image not found: .*image_3\.h5"):
        score_table(table, scorer, out, images, progress=False)
    assert not out.exists()


def test_missing_model_column_and_incompatible_models(tmp_path: Path) -> None:
    table, images = _regions(tmp_path, 2)
    scorer = RegionScorer(FakeTabular(), FakeSegmenter(), _fuser())
    with pytest.raises(ValueError, match="missing column.*rain_7d_mm.*tabular model"):
        score_table(table.drop(columns=["rain_7d_mm"]), scorer, tmp_path / "s.csv", images, progress=False)
    assert not (tmp_path / "s.csv").exists()
    fuser = _fuser()
    fuser.meta_ = {"tabular_features": ["slope_deg", "ndvi"], "tabular_run_id": "r1", "imagery_channel_set": 23}
    with pytest.raises(ValueError, match="incompatible models.*r1"):
        RegionScorer(FakeTabular(), FakeSegmenter(), fuser)
    fuser.meta_ = {"imagery_channel_set": 14, "imagery_run_id": "r2"}
    with pytest.raises(ValueError, match="channel set 14"):
        RegionScorer(FakeTabular(), FakeSegmenter(), fuser)
    with pytest.raises(ValueError, match="stacked.*fusion-model"):
        RegionScorer(FakeTabular(), FakeSegmenter(), None)


def test_region_table_errors(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    pd.DataFrame({"region_id": [1, 2, 2], "slope_deg": 1.0}).to_csv(p, index=False)
    with pytest.raises(ValueError, match="duplicate region_id 2"):
        read_region_table(p)
    pd.DataFrame({"region_id": [], "slope_deg": []}).to_csv(p, index=False)
    with pytest.raises(ValueError, match="no data rows"):
        read_region_table(p)
    p.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_region_table(p)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_region_table(tmp_path / "nope.csv")
    pd.DataFrame({"id": [1]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match="no 'region_id' column"):
        read_region_table(p)


def test_resume_skips_done_regions_and_repairs_a_torn_line(tmp_path: Path) -> None:
    table, images = _regions(tmp_path, 10)
    out = tmp_path / "scores.csv"
    full = RegionScorer(FakeTabular(), FakeSegmenter(), _fuser(), ScoringConfig(batch_size=4))
    score_table(table, full, out, images, progress=False)
    expected = pd.read_csv(out)

    # simulate a crash: the first 4 regions written, then half a line
    part = partial_path(out)
    lines = out.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:5]) + lines[5][:20])
    fingerprint_path(part).write_text("{}")  # what the crashed run left beside its partial file
    out.unlink()
    seg = FakeSegmenter()
    scorer = RegionScorer(FakeTabular(), seg, _fuser(), ScoringConfig(batch_size=4))
    info = score_table(table, scorer, out, images, resume=True, progress=False)
    assert info.skipped == 4 and info.scored == 6 and seg.seen == 6
    got = pd.read_csv(out)
    pd.testing.assert_frame_equal(got, expected)


def test_policies_without_fuser_and_tabular_only(tmp_path: Path) -> None:
    table, images = _regions(tmp_path, 6)
    for policy in ("tabular", "imagery", "any", "both", "weighted"):
        scorer = RegionScorer(FakeTabular(), FakeSegmenter(), None, ScoringConfig(policy=policy))
        out = tmp_path / f"{policy}.csv"
        score_table(table, scorer, out, images, progress=False)
        df = pd.read_csv(out)
        assert df["decision"].isin([0, 1]).all() and len(df) == 6
    any_, both = pd.read_csv(tmp_path / "any.csv"), pd.read_csv(tmp_path / "both.csv")
    assert (any_["decision"] >= both["decision"]).all() and any_["decision"].sum() > both["decision"].sum()
    scorer = RegionScorer(FakeTabular(), None, _fuser())
    score_table(table, scorer, tmp_path / "tab.csv", None, progress=False)
    df = pd.read_csv(tmp_path / "tab.csv")
    assert (df["evidence"] == "tabular_only").all() and df["p_imagery"].isna().all()
