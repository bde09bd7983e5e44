"""train_fusion and score_regions CLIs: happy path, bad input (one-line errors, exit 2, FAILED runs)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from common.cli import run_main
from fusion.demo.paired import PairedConfig, make_paired_regions
from fusion.scoring import ALL_COLUMNS
from imagery.data import write_image
from pipelines import score_regions, train_fusion
from tests.fusion.helpers import log_oof_run, oof_pair, segmenter_folder, tabular_model_folder

FEATURES = ["slope_deg", "relief_m", "rain_7d_mm", "soil_moisture", "ndvi"]


def _fusion_runs(tracking_uri: str) -> tuple[str, str]:
    t, i = oof_pair()
    tab = log_oof_run("t", t, extra={"tabular_model.json": {"feature_names": FEATURES}})
    img = log_oof_run("i", i, params={"model.channel_set": "14"})
    return tab, img


def _last_run(experiment: str) -> mlflow.entities.Run:
    exp = mlflow.get_experiment_by_name(experiment)
    return mlflow.search_runs([exp.experiment_id], output_format="list", order_by=["start_time DESC"])[0]


def test_train_fusion_logs_fuser_with_input_runs(tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    tab, img = _fusion_runs(tracking_uri)
    assert run_main(train_fusion.main, ["--tabular-run", tab, "--imagery-run", img, "--seed", "1"]) == 0
    run = _last_run("train_fusion")
    assert run.info.status == "FINISHED"
    assert run.data.tags["tabular_run_id"] == tab and run.data.tags["imagery_run_id"] == img
    assert {"stacker_cv_brier", "oof_brier_tabular", "oof_brier_imagery"} <= set(run.data.metrics)
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="fuser.json")
    meta = json.loads(Path(local).read_text())["meta"]
    assert meta["tabular_features"] == FEATURES and meta["imagery_channel_set"] == 14
    assert meta["tabular_run_id"] == tab
    assert "fusion_model: runs:/" in capsys.readouterr().out


def test_train_fusion_bad_runs(tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    tab, img = _fusion_runs(tracking_uri)
    assert run_main(train_fusion.main, ["--tabular-run", "0" * 32, "--imagery-run", img]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: tabular run") and err.count("\n") == 1
    t, _ = oof_pair()
    short = log_oof_run("i", t.iloc[5:], params={"model.channel_set": "14"})  # regions 0-4 missing
    assert run_main(train_fusion.main, ["--tabular-run", tab, "--imagery-run", short]) == 2
    err = capsys.readouterr().err
    assert "missing from the imagery OOF: 0, 1, 2, 3, 4" in err and err.count("\n") == 1
    assert _last_run("train_fusion").info.status == "FAILED"
    with mlflow.start_run() as empty:
        mlflow.set_tag("landslide.kind", "imagery")
    assert run_main(train_fusion.main, ["--tabular-run", tab, "--imagery-run", empty.info.run_id]) == 2
    assert "has no oof_predictions.csv" in capsys.readouterr().err


@pytest.fixture
def scoring_inputs(tmp_path: Path, tracking_uri: str) -> dict[str, Path | str]:
    pairs = make_paired_regions(PairedConfig(n_regions=60, size=16, seed=0))
    tab = tabular_model_folder(pairs.table, FEATURES, tmp_path / "tab")
    seg = segmenter_folder(tmp_path / "seg")
    for rid, img in zip(pairs.region_ids, pairs.images, strict=True):
        write_image(tmp_path / "l4s" / "img" / f"image_{rid}.h5", img)
    regions = tmp_path / "regions.csv"
    pairs.table.to_csv(regions, index=False)
    t, i = oof_pair()
    from fusion.stacking import StackingFuser

    fuser = StackingFuser().fit_oof(t, i)
    fuser.meta_ = {"tabular_features": FEATURES, "imagery_channel_set": 14, "tabular_run_id": "tabrun"}
    fpath = fuser.save(tmp_path / "fuser.json")
    return {"regions": regions, "images": tmp_path / "l4s", "tab": tab, "seg": seg, "fuser": fpath, "tmp": tmp_path}


def _argv(inp: dict[str, Path | str], out: Path, **over: str) -> list[str]:
    args = {
        "--regions": inp["regions"],
        "--images": inp["images"],
        "--tabular-model": inp["tab"],
        "--imagery-model": inp["seg"],
        "--fusion-model": inp["fuser"],
        "--out": out,
    }
    args.update(over)
    argv = [x for k, v in args.items() for x in (k, str(v))]
    return [*argv, "--no-progress", "--batch-size", "16"]


def test_score_regions_end_to_end(scoring_inputs: dict[str, Path | str], capsys: pytest.CaptureFixture[str]) -> None:
    out = Path(scoring_inputs["tmp"]) / "scores.csv"
    (Path(scoring_inputs["images"]) / "img" / "image_7.h5").unlink()  # documented fallback
    assert run_main(score_regions.main, _argv(scoring_inputs, out)) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == list(ALL_COLUMNS) and len(df) == 60
    assert df["p_fused"].between(0, 1).all() and df["p_tabular"].between(0, 1).all()
    row = df.set_index("region_id").loc[7]
    assert row["evidence"] == "tabular_only" and "image_7.h5" in row["note"] and np.isnan(row["p_imagery"])
    assert (df["evidence"] == "both").sum() == 59
    assert df["top_features"].str.count(";").eq(2).all()
    assert df.loc[df.evidence == "both", "mask_path"].map(lambda p: Path(p).is_file()).all()
    run = _last_run("score_regions")
    assert run.info.status == "FINISHED" and run.data.metrics["evidence_tabular_only"] == 1
    assert "scored 60 region(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: pd.concat([t, t.iloc[[3]]]), "duplicate region_id 3"),
        (lambda t: t.drop(columns=["rain_7d_mm"]), "missing column(s) rain_7d_mm needed by the tabular model"),
        (lambda t: t.iloc[:0], "has no data rows"),
    ],
)
def test_score_regions_bad_tables(
    scoring_inputs: dict[str, Path | str], capsys: pytest.CaptureFixture[str], mutate: object, message: str
) -> None:
    regions = Path(scoring_inputs["tmp"]) / "bad.csv"
    mutate(pd.read_csv(scoring_inputs["regions"])).to_csv(regions, index=False)  # type: ignore[operator]
    out = Path(scoring_inputs["tmp"]) / "scores.csv"
    assert run_main(score_regions.main, _argv(scoring_inputs, out, **{"--regions": str(regions)})) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not out.exists()
    assert _last_run("score_regions").info.status == "FAILED"


def test_score_regions_incompatible_models(
    scoring_inputs: dict[str, Path | str], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp = Path(scoring_inputs["tmp"])
    other = segmenter_folder(tmp / "seg23", channel_set=23)
    out = tmp / "scores.csv"
    assert run_main(score_regions.main, _argv(scoring_inputs, out, **{"--imagery-model": str(other)})) == 2
    assert "channel set 14" in capsys.readouterr().err
    pairs_table = pd.read_csv(scoring_inputs["regions"])
    tab2 = tabular_model_folder(pairs_table, ["slope_deg", "ndvi"], tmp / "tab2")
    assert run_main(score_regions.main, _argv(scoring_inputs, out, **{"--tabular-model": str(tab2)})) == 2
    assert "incompatible models" in capsys.readouterr().err
    assert run_main(score_regions.main, _argv(scoring_inputs, out, **{"--fusion-model": str(tmp / "nope.json")})) == 2
    assert "fusion model not found" in capsys.readouterr().err
    assert not out.exists()


def test_score_regions_strict_images_and_missing_folder(
    scoring_inputs: dict[str, Path | str], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp = Path(scoring_inputs["tmp"])
    table = pd.read_csv(scoring_inputs["regions"])
    table["image"] = [f"img/image_{r}.h5" for r in table.region_id]
    regions = tmp / "with_images.csv"
    table.to_csv(regions, index=False)
    (Path(scoring_inputs["images"]) / "img" / "image_11.h5").write_bytes(b"garbage")
    out = tmp / "scores.csv"
    argv = _argv(scoring_inputs, out, **{"--regions": str(regions)})
    assert run_main(score_regions.main, [*argv, "--strict-images"]) == 2
    err = capsys.readouterr().err
    assert "region 11: image unreadable" in err and "image_11.h5" in err
    assert not out.exists()
    assert run_main(score_regions.main, _argv(scoring_inputs, out, **{"--images": str(tmp / "nowhere")})) == 2
    assert "--images folder not found" in capsys.readouterr().err


# ------------------------------------------------------------------ nothing wrong passes silently (issue 13)
def test_train_fusion_refuses_swapped_same_or_foreign_runs(
    tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tab, img = _fusion_runs(tracking_uri)
    assert run_main(train_fusion.main, ["--tabular-run", img, "--imagery-run", tab]) == 2
    err = capsys.readouterr().err
    assert f"--tabular-run {img} is an imagery run" in err and err.count("\n") == 1
    assert run_main(train_fusion.main, ["--tabular-run", tab, "--imagery-run", tab]) == 2
    assert "are the same run" in capsys.readouterr().err
    t, i = oof_pair()
    i.loc[3, "p_oof"] = 1.7
    bad = log_oof_run("i", i, params={"model.channel_set": "14"})
    assert run_main(train_fusion.main, ["--tabular-run", tab, "--imagery-run", bad]) == 2
    assert "is not a probability in [0, 1]" in capsys.readouterr().err
    assert _last_run("train_fusion").info.status == "FAILED"


def test_fuser_records_base_runs_and_scoring_refuses_other_models(
    scoring_inputs: dict[str, Path | str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A fuser fitted on other base runs is refused by digest, naming both; --allow-other-base-models warns."""
    tmp = Path(scoring_inputs["tmp"])
    fuser = json.loads(Path(scoring_inputs["fuser"]).read_text())
    fuser["meta"].update(tabular_run_id="tabrun", tabular_model_digest="0" * 64)
    other = tmp / "fuser_other.json"
    other.write_text(json.dumps(fuser))
    out = tmp / "scores.csv"
    assert run_main(score_regions.main, _argv(scoring_inputs, out, **{"--fusion-model": str(other)})) == 2
    err = capsys.readouterr().err
    assert "--tabular-model (digest" in err and "tabular run tabrun (digest 000000000000)" in err
    assert not out.exists()
    argv = [*_argv(scoring_inputs, out, **{"--fusion-model": str(other)}), "--allow-other-base-models"]
    assert run_main(score_regions.main, argv) == 0
    assert "warning: --tabular-model" in capsys.readouterr().err
    assert pd.read_csv(out)["note"].str.contains("not the model of the fuser's tabular run").all()


def test_score_resume_refuses_a_partial_file_from_other_inputs(
    scoring_inputs: dict[str, Path | str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fusion.scoring import RegionScorer

    tmp = Path(scoring_inputs["tmp"])
    out = tmp / "scores.csv"
    real = RegionScorer.score_batch
    calls = {"n": 0}

    def crash_on_second_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the run is killed after its first batch
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RegionScorer, "score_batch", crash_on_second_batch)
    assert run_main(score_regions.main, _argv(scoring_inputs, out)) == 130
    monkeypatch.setattr(RegionScorer, "score_batch", real)
    partial = out.with_name(out.name + ".partial")
    assert partial.exists() and not out.exists() and _last_run("score_regions").info.status == "KILLED"
    capsys.readouterr()
    assert run_main(score_regions.main, [*_argv(scoring_inputs, out), "--resume", "--policy", "any"]) == 2
    err = capsys.readouterr().err
    assert "scored with other inputs" in err and "scoring.policy: stacked -> any" in err and err.count("\n") == 1
    other = segmenter_folder(tmp / "seg_other", seed=1)
    assert (
        run_main(score_regions.main, [*_argv(scoring_inputs, out, **{"--imagery-model": str(other)}), "--resume"]) == 2
    )
    assert "imagery_model:" in capsys.readouterr().err
    assert run_main(score_regions.main, [*_argv(scoring_inputs, out), "--resume"]) == 0
    resumed = pd.read_csv(out)
    fresh = tmp / "fresh.csv"
    assert run_main(score_regions.main, _argv(scoring_inputs, fresh)) == 0
    cols = [c for c in resumed.columns if c != "mask_path"]
    pd.testing.assert_frame_equal(resumed[cols], pd.read_csv(fresh)[cols])


def test_all_invalid_image_and_wrong_images_folder(
    scoring_inputs: dict[str, Path | str], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp = Path(scoring_inputs["tmp"])
    write_image(Path(scoring_inputs["images"]) / "img" / "image_5.h5", np.full((14, 16, 16), np.nan, np.float32))
    out = tmp / "scores.csv"
    assert run_main(score_regions.main, _argv(scoring_inputs, out)) == 0
    row = pd.read_csv(out).set_index("region_id").loc[5]
    assert row["evidence"] == "tabular_only" and "imagery missing" in row["note"] and np.isnan(row["p_imagery"])
    assert "1 of 60 regions have no usable image" in capsys.readouterr().err
    empty = tmp / "empty_images"
    (empty / "img").mkdir(parents=True)
    assert run_main(score_regions.main, _argv(scoring_inputs, out, **{"--images": str(empty)})) == 2
    assert "none of the 60 regions has a usable image" in capsys.readouterr().err
    argv = [*_argv(scoring_inputs, out, **{"--images": str(empty)}), "--allow-missing-images"]
    assert run_main(score_regions.main, argv) == 0
    assert (pd.read_csv(out)["evidence"] == "tabular_only").all()
    assert "60 of 60 regions have no usable image" in capsys.readouterr().err


def test_scores_as_parquet_and_bad_suffix(
    scoring_inputs: dict[str, Path | str], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp = Path(scoring_inputs["tmp"])
    out = tmp / "scores.parquet"
    assert run_main(score_regions.main, _argv(scoring_inputs, out)) == 0
    df = pd.read_parquet(out)
    assert list(df.columns) == list(ALL_COLUMNS) and len(df) == 60
    assert run_main(score_regions.main, _argv(scoring_inputs, tmp / "scores.txt")) == 2
    assert "expected .csv or .parquet" in capsys.readouterr().err
