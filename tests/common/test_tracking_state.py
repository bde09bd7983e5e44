"""MLflow's global state belongs to the command: libraries take the store they need and change nothing.

* Loaders resolve ``runs:/`` URIs against the store they are given, without touching
  ``mlflow.get_tracking_uri()`` or the process environment.
* A command run with ``MLFLOW_TRACKING_URI`` unset and only ``--tracking-uri`` puts every run, tag and
  model in that store and nothing in ``./mlruns``.
* Experiments carry MLflow's model-training kind tag; runs record their data set as an MLflow input.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from common.fingerprint import fingerprint_dataframe
from common.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    download_model,
    ensure_experiment,
    log_fingerprint,
    tracked_run,
)
from fusion.demo.paired import PairedConfig, make_paired_regions
from fusion.stacking import StackingFuser, load_fuser
from imagery.data import write_image
from imagery.inference import load_segmenter
from tabular.serving import load_tabular_model
from tests.fusion.helpers import oof_pair, segmenter_folder, tabular_model_folder

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["slope_deg", "relief_m", "rain_7d_mm", "soil_moisture", "ndvi"]


def _other_store_with_models(tmp_path: Path) -> tuple[str, str]:
    """A second SQLite store holding one run with a tabular model, a segmenter and a fuser (logged by client)."""
    uri = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    (tmp_path / "other").mkdir()
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("other", artifact_location=(tmp_path / "other" / "artifacts").as_uri())
    run = client.create_run(exp)
    pairs = make_paired_regions(PairedConfig(n_regions=60, size=16, seed=0))
    client.log_artifacts(run.info.run_id, str(tabular_model_folder(pairs.table, FEATURES, tmp_path / "tab")), "model")
    client.log_artifacts(run.info.run_id, str(segmenter_folder(tmp_path / "seg")), "segmenter")
    t, i = oof_pair()
    client.log_artifact(run.info.run_id, str(StackingFuser().fit_oof(t, i).save(tmp_path / "fuser.json")))
    client.set_terminated(run.info.run_id)
    return uri, run.info.run_id


def test_loaders_leave_mlflow_global_state_alone(tmp_path: Path, tracking_uri: str) -> None:
    other, run_id = _other_store_with_models(tmp_path)
    before_uri, before_env = mlflow.get_tracking_uri(), dict(os.environ)
    assert before_uri == tracking_uri != other
    tab = load_tabular_model(f"runs:/{run_id}/model", tracking_uri=other)
    seg = load_segmenter(run_id, device="cpu", tracking_uri=other)
    fus = load_fuser(f"runs:/{run_id}", tracking_uri=other)
    assert tab.feature_names_ == FEATURES and seg.channel_set == 14 and "both" in fus.models_
    assert download_model(run_id, tracking_uri=other, default_artifact="fuser.json").name == "fuser.json"
    ensure_experiment("made-elsewhere", tracking_uri=other)
    assert mlflow.get_tracking_uri() == before_uri
    assert dict(os.environ) == before_env
    assert mlflow.get_experiment_by_name("made-elsewhere") is None  # created in `other`, not in the global store
    # the URI forms all loaders accept, one resolver for all: a bare run id, runs:/<id>, runs:/<id>/<path>
    with pytest.raises(FileNotFoundError, match="--tabular-model .*model not found"):
        load_tabular_model(str(tmp_path / "nope"), flag="--tabular-model")


def test_experiment_kind_tag_and_dataset_input(tracking_uri: str) -> None:
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0, 1, 0]})
    fp = fingerprint_dataframe(df, source="unit/table.csv")
    with tracked_run("kind-check", {"x": 1}) as run:
        log_fingerprint(fp)
    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("kind-check")
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert ds.name == "table" and ds.digest == fp.sha256[:16]  # named after the data, not "data"
    assert json.loads(ds.source)["tags"]["source"] == "unit/table.csv"
    assert json.loads(ds.profile)["num_rows"] == 3
    assert {t.key: t.value for t in inputs[0].tags}.get("mlflow.data.context") == "training"
    # runs get readable names, never the seeded random ones MLflow draws
    assert client.get_run(run.info.run_id).info.run_name.startswith("kind-check-")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_commands_use_only_the_flag_store(tmp_path: Path) -> None:
    """quickstart, then score_regions on its models: env var unset, only --tracking-uri; nothing in ./mlruns."""
    store = tmp_path / "store"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    work = tmp_path / "work"
    work.mkdir()
    qs = _run(
        [
            "pipelines.quickstart",
            "--n-regions",
            "60",
            "--patch-size",
            "16",
            "--tabular-folds",
            "2",
            "--imagery-epochs",
            "1",
            "--imagery-width",
            "2",
            "--n-bootstrap",
            "20",
            "--seed",
            "3",
            "--out-dir",
            "qs",
            "--tracking-uri",
            uri,
        ],
        work,
    )
    assert qs.returncode == 0, qs.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("quickstart")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert {"tabular", "imagery", "imagery-fold0", "imagery-fold1", "fusion", "score", "evaluation"} <= set(runs)
    fusion = runs["fusion"]
    assert client.get_run(fusion.data.tags["tabular_run_id"]).info.run_name == "tabular"
    assert client.get_run(fusion.data.tags["imagery_run_id"]).info.run_name == "imagery"
    assert "fuser.json" in {a.path for a in client.list_artifacts(fusion.info.run_id)}
    assert not (work / "mlruns").exists()

    test_regions = work / "regions.csv"
    new = make_paired_regions(PairedConfig(n_regions=10, size=16, seed=9))
    new.table.to_csv(test_regions, index=False)
    for rid, img in zip(new.region_ids, new.images, strict=True):
        write_image(work / "l4s" / "img" / f"image_{rid}.h5", img)
    fold0 = runs["imagery-fold0"].info.run_id
    sc = _run(
        [
            "pipelines.score_regions",
            "--regions",
            str(test_regions),
            "--images",
            "l4s",
            "--out",
            "scores.csv",
            "--tabular-model",
            f"runs:/{runs['tabular'].info.run_id}/model",
            "--imagery-model",
            f"runs:/{fold0}",
            "--fusion-model",
            fusion.info.run_id,
            "--no-progress",
            "--tracking-uri",
            uri,
        ],
        work,
    )
    assert sc.returncode == 0, sc.stderr[-3000:]
    assert sc.stderr == ""  # the project's own output only: no third-party progress bars or warnings
    scored = client.get_experiment_by_name("score_regions")
    assert len(client.search_runs([scored.experiment_id])) == 1
    assert len(pd.read_csv(work / "scores.csv")) == 10
    assert not (work / "mlruns").exists()


def test_names_say_what_ran_on_what(tracking_uri: str, tmp_path: Path) -> None:
    import tempfile

    from common.tracking import clean_source, data_name, default_run_name, runs_table_url

    assert data_name("/data/lsat_cells/") == "lsat_cells" and data_name("regions.csv") == "regions"
    assert data_name("../shared/data/sentinel2_l2a_cogs_29RKH") == "sentinel2_l2a_cogs_29RKH"
    assert data_name("paired(n=800,seed=42)") == "paired" and data_name("") == "data"
    assert data_name("s3://bucket/l4s/train.h5") == "train"
    made = Path(tempfile.mkdtemp())  # a job's throw-away folder: its path is never logged
    try:
        assert clean_source(str(made / "regions.csv")) == "temporary copy of regions.csv"
        assert data_name(str(made / "regions.csv")) == "regions"
    finally:
        made.rmdir()
    assert clean_source(str(tmp_path / "mine.csv")) == str(tmp_path / "mine.csv")  # a user's file keeps its path
    name = default_run_name("tabular", None, "lsat_cells")
    assert re.fullmatch(r"tabular-lsat_cells-\d{8}-\d{6}-[0-9a-f]{4}", name), name

    @dataclasses.dataclass
    class Cfg:
        data: str

    with tracked_run("names-check", Cfg(str(tmp_path / "lsat.csv"))) as run:
        log_fingerprint(
            fingerprint_dataframe(pd.DataFrame({"a": [1]}), source=str(tmp_path / "lsat.csv")), prefix="data_train"
        )
    client = mlflow.MlflowClient(tracking_uri)
    got = client.get_run(run.info.run_id)
    assert got.info.run_name.startswith("names-check-lsat-")  # pytest runs no pipelines.* command
    assert [i.dataset.name for i in got.inputs.dataset_inputs] == ["lsat-train"]
    exp_id = client.get_experiment_by_name("names-check").experiment_id
    assert (
        runs_table_url("names-check", tracking_uri)
        == f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning"
    )
