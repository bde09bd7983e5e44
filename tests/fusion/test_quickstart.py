"""The main job end to end (tiny by default; the full-size run is marked slow)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from common.cli import run_main
from fusion.evaluation import bootstrap_table
from imagery.inference.serving import load_segmenter
from pipelines import quickstart

TINY = [
    "--n-regions",
    "80",
    "--patch-size",
    "16",
    "--tabular-folds",
    "2",
    "--imagery-epochs",
    "1",
    "--imagery-width",
    "2",
    "--n-bootstrap",
    "50",
    "--seed",
    "3",
]


def test_bootstrap_table_intervals_cover_point_and_pair() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = np.clip(0.5 * y + rng.random(300) * 0.6, 0, 1)
    noise = rng.random(300)
    t = bootstrap_table(
        y, {"tabular": noise, "imagery": good, "fused": good}, {"tabular": 0.5, "imagery": 0.5, "fused": 0.5}, 60, 0
    )
    by = t.set_index("model")
    for m in ("tabular", "imagery", "fused"):
        for k in ("roc_auc", "pr_auc", "f1"):
            assert by.loc[m, f"{k}_lo"] <= by.loc[m, k] <= by.loc[m, f"{k}_hi"]
    assert by.loc["imagery", "roc_auc_lo"] > 0.8 and by.loc["tabular", "roc_auc_hi"] < 0.65
    # identical probabilities: the paired difference is exactly zero in every replicate
    assert by.loc["fused - imagery", "roc_auc_lo"] == by.loc["fused - imagery", "roc_auc_hi"] == 0
    assert by.loc["fused - tabular", "roc_auc_lo"] > 0.2


def test_quickstart_tiny_end_to_end(tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "qs"
    assert run_main(quickstart.main, [*TINY, "--out-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"mlflow ui --backend-store-uri {tracking_uri}" in text
    for name in ("tabular", "imagery", "fused", "fused - tabular"):
        assert f"\n{name} " in text
    metrics = pd.read_csv(out / "metrics.csv").set_index("model")
    assert {"tabular", "imagery", "fused"} <= set(metrics.index)
    for m in ("tabular", "imagery", "fused"):
        assert 0 <= metrics.loc[m, "roc_auc_lo"] <= metrics.loc[m, "roc_auc"] <= metrics.loc[m, "roc_auc_hi"] <= 1
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 24 and scores["p_fused"].between(0, 1).all() and (scores["evidence"] == "both").all()
    exp = mlflow.get_experiment_by_name("quickstart")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    names = {r.info.run_name: r for r in runs}
    assert {"tabular", "imagery", "imagery-fold0", "imagery-fold1", "fusion", "score", "evaluation", "assess"} <= set(
        names
    )
    assert all(r.info.status == "FINISHED" for r in runs)
    fusion = names["fusion"]
    assert fusion.data.tags["tabular_run_id"] == names["tabular"].info.run_id
    assert fusion.data.tags["imagery_run_id"] == names["imagery"].info.run_id
    assert "data_sha256" in names["evaluation"].data.params and "git_commit" in names["evaluation"].data.tags
    # step 6: the same held-out regions assessed from their polygons on the georeferenced world
    assert "[6/6] assessed the 24 held-out regions" in text and "report.html" in text
    assert (out / "assess" / "report.html").stat().st_size > 10_000
    regions = gpd_like(out / "assess" / "regions.geojson")
    assert len(regions) == 24 and regions["p_fused"].between(0, 1).all()
    # the zonal statistics of the factor rasters reproduce the table, so the tabular model agrees exactly
    both = scores.assign(region_id=scores["region_id"].astype(str)).merge(regions, on="region_id")
    assert len(both) == 24
    np.testing.assert_allclose(both["p_tabular_y"], both["p_tabular_x"], atol=1e-4)
    assert "test_assess_fused_roc_auc" in names["evaluation"].data.metrics
    # the three models are registered as @candidate, carded and tagged as synthetic; the printed imagery model loads
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    for name in ("landslide-tabular", "landslide-imagery", "landslide-fuser"):
        mv = client.get_model_version_by_alias(name, "candidate")
        assert mv.tags["landslide.synthetic"] == "true" and "SYNTHETIC DATA" in mv.description, name
    assert "imagery_registered: models:/landslide-imagery/1" in text
    # the printed imagery_run_id names the run that holds the usable model (issue 17, item 8)
    printed = dict(line.split(": ", 1) for line in text.splitlines() if line.startswith("imagery_"))
    assert printed["imagery_model"] == f"runs:/{printed['imagery_run_id']}/segmenter"
    assert printed["imagery_oof_run_id"] == names["imagery"].info.run_id
    assert load_segmenter(f"runs:/{printed['imagery_run_id']}").bands


def gpd_like(path: Path) -> pd.DataFrame:
    """A GeoJSON file's properties as a table (region_id as text)."""
    import json

    feats = json.loads(path.read_text(encoding="utf-8"))["features"]
    table = pd.DataFrame([f["properties"] for f in feats])
    return table.assign(region_id=table["region_id"].astype(str))


def test_quickstart_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(quickstart.main, ["--test-fraction", "0.95"]) == 2
    assert "--test-fraction" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_full_size_end_to_end(tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The default job as CI runs it. Its time budget (5 min) is measured by the CI dry run and recorded in
    benchmarks/RESULTS.md, not asserted here (a timed test fails on a loaded machine)."""
    assert run_main(quickstart.main, ["--out-dir", str(tmp_path / "qs")]) == 0
    metrics = pd.read_csv(tmp_path / "qs" / "metrics.csv").set_index("model")
    assert metrics.loc[["tabular", "imagery", "fused"], "roc_auc"].between(0, 1).all()
    assert metrics.loc["fused", "roc_auc"] > 0.8  # 0.96 on the development VM; far above chance anywhere
    assert (tmp_path / "qs" / "assess" / "report.html").is_file()
