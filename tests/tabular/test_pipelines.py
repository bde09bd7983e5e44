"""End-to-end: train_tabular and predict_tabular CLIs, MLflow artifacts, model reload, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from common.cli import EXIT_USER_ERROR, run_main
from pipelines import predict_tabular, train_tabular
from tabular.serving import load_tabular_model
from tabular.synthetic import make_region_table

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--n-regions", "600", "--folds", "3", "--max-rounds", "80", "--early-stopping", "10"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small training run shared by the tests below (its own SQLite store)."""
    root = tmp_path_factory.mktemp("train")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    cfg = train_tabular.COMMAND.parse([*FAST, "--tracking-uri", uri, "--no-register"])
    lines: list[str] = []
    result = train_tabular.COMMAND.call(cfg, log=lines.append)
    return {"uri": uri, "result": result, "lines": lines, "root": root}


def _client(uri: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=uri)


def test_train_logs_metrics_params_and_artifacts(trained):
    uri, result = trained["uri"], trained["result"]
    run = _client(uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for m in ("roc_auc", "pr_auc", "f1", "precision", "recall", "brier"):
        assert f"{m}_mean" in run.data.metrics and f"{m}_std" in run.data.metrics
    assert run.data.metrics["roc_auc_mean"] > 0.7
    assert 0 < run.data.metrics["threshold"] < 1
    assert run.data.params["data_rows"] == "600"
    assert "git_commit" in run.data.tags
    assert run.data.params["cv.n_folds"] == "3"
    history = _client(uri).get_metric_history(result.run_id, "fold_roc_auc")
    assert sorted(h.step for h in history) == [0, 1, 2]
    names = {a.path for a in _client(uri).list_artifacts(result.run_id)}
    assert {
        "oof_predictions.csv",
        "shap_importance.csv",
        "shap_summary.png",
        "explanations.csv",
        "tabular_model.json",
    } <= names
    assert any(line.startswith("fold 3/3") for line in trained["lines"])


def test_oof_artifact_matches_data(trained):
    path = mlflow.artifacts.download_artifacts(
        run_id=trained["result"].run_id, artifact_path="oof_predictions.csv", tracking_uri=trained["uri"]
    )
    oof = pd.read_csv(path)
    df = make_region_table(600, seed=42)
    assert list(oof.columns) == ["region_id", "y_true", "p_oof", "fold"]
    assert oof["region_id"].tolist() == df["region_id"].tolist()
    assert oof["y_true"].tolist() == df["landslide"].tolist()
    assert oof["p_oof"].between(0, 1).all() and set(oof["fold"]) == {0, 1, 2}


@pytest.mark.parametrize("form", ["runs", "run_id", "logged", "local"])
def test_load_tabular_model_forms(trained, form, tmp_path):
    uri, result = trained["uri"], trained["result"]
    mlflow.set_tracking_uri(uri)
    if form == "runs":
        model_uri = result.model_uri
    elif form == "run_id":
        model_uri = result.run_id
    elif form == "logged":
        model_uri = result.logged_model_uri
    else:
        model_uri = mlflow.artifacts.download_artifacts(artifact_uri=result.model_uri, dst_path=str(tmp_path))
    model = load_tabular_model(model_uri, tracking_uri=uri)
    assert model.threshold_ == pytest.approx(result.threshold)
    assert "lithology" in model.categorical_levels_
    X = make_region_table(30, seed=7).drop(columns=["landslide"])
    p = model.predict_proba(X)[:, 1]
    assert p.shape == (30,) and np.all((p > 0) & (p < 1))


def test_predict_cli_writes_reasons(trained, tmp_path, capsys):
    new = make_region_table(40, seed=11).drop(columns=["landslide"])
    new["lithology"] = new["lithology"].astype(str)
    new.loc[[2, 5], "lithology"] = "basalt"
    data = tmp_path / "new.csv"
    new[new.columns[::-1]].to_csv(data, index=False)
    out = tmp_path / "preds.csv"
    code = run_main(
        predict_tabular.main,
        [
            "--model",
            trained["result"].model_uri,
            "--data",
            str(data),
            "--out",
            str(out),
            "--top-k",
            "2",
            "--tracking-uri",
            trained["uri"],
        ],
    )
    assert code == 0
    preds = pd.read_csv(out)
    assert list(preds.columns) == ["region_id", "p_landslide", "label"] + [
        f"reason_{i}_{k}" for i in (1, 2) for k in ("feature", "value", "shap")
    ]
    assert preds["region_id"].tolist() == list(range(40))
    model = load_tabular_model(trained["result"].model_uri, tracking_uri=trained["uri"])
    assert preds["label"].tolist() == (preds["p_landslide"] >= model.threshold_).astype(int).tolist()
    assert np.allclose(preds["p_landslide"], model.predict_proba(new)[:, 1])
    assert "lithology': 2" in capsys.readouterr().err
    # --top-k 0: probabilities and labels only (no SHAP, for large tables)
    out0 = tmp_path / "p0.csv"
    assert (
        run_main(
            predict_tabular.main,
            [
                "--model",
                trained["result"].model_uri,
                "--data",
                str(data),
                "--out",
                str(out0),
                "--top-k",
                "0",
                "--tracking-uri",
                trained["uri"],
            ],
        )
        == 0
    )
    p0 = pd.read_csv(out0)
    assert list(p0.columns) == ["region_id", "p_landslide", "label"]
    assert np.allclose(p0["p_landslide"], preds["p_landslide"])


# ----------------------------------------------------------------------------- bad input


def _bad_files(tmp: Path) -> dict[str, tuple[Path, list[str], str]]:
    good = make_region_table(60, seed=0)
    cases: dict[str, tuple[Path, list[str], str]] = {}

    def csv(name: str, df: pd.DataFrame) -> Path:
        p = tmp / name
        df.to_csv(p, index=False)
        return p

    cases["missing file"] = (tmp / "nope.csv", [], "not found")
    (tmp / "bin.csv").write_bytes(b"\xff\xfe\x00\x81" * 64)
    cases["unreadable"] = (tmp / "bin.csv", [], "bin.csv")
    (tmp / "t.json").write_text("{}")
    cases["unsupported format"] = (tmp / "t.json", [], "unsupported format")
    cases["empty table"] = (csv("empty.csv", good.iloc[:0]), [], "no data rows")
    cases["missing target"] = (
        csv("notarget.csv", good.drop(columns=["landslide"])),
        [],
        "target column 'landslide' not found",
    )
    cases["one class"] = (csv("one.csv", good.assign(landslide=1)), [], "single class")
    cases["three classes"] = (csv("three.csv", good.assign(landslide=np.arange(60) % 3)), [], "3 classes")
    (tmp / "dup.csv").write_text("a,a,landslide\n1,2,0\n3,4,1\n")
    cases["duplicate columns"] = (tmp / "dup.csv", [], "duplicate column names")
    cases["all-NaN column"] = (csv("nan.csv", good.assign(ndvi=np.nan)), [], "'ndvi' is all NaN")
    cases["constant column"] = (csv("const.csv", good.assign(relief_m=5.0)), [], "'relief_m' is constant")
    bad_num = good.astype({"slope_deg": object})
    bad_num.loc[7, "slope_deg"] = "steep"
    cases["non-numeric"] = (csv("nonnum.csv", bad_num), [], "'slope_deg' has non-numeric value 'steep'")
    return cases


CASES = [
    "missing file",
    "unreadable",
    "unsupported format",
    "empty table",
    "missing target",
    "one class",
    "three classes",
    "duplicate columns",
    "all-NaN column",
    "constant column",
    "non-numeric",
]


@pytest.mark.parametrize("case", CASES)
def test_train_bad_input(case, tmp_path, tracking_uri, capsys):
    path, extra, pattern = _bad_files(tmp_path)[case]
    code = run_main(train_tabular.main, ["--data", str(path), "--experiment", "bad", *extra])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert pattern in err
    runs = mlflow.search_runs(experiment_names=["bad"])
    assert runs["status"].tolist() == ["FAILED"]
    assert not _client(tracking_uri).list_artifacts(runs["run_id"][0], "model")


def test_predict_missing_columns(trained, tmp_path, tracking_uri, capsys):
    mlflow.set_tracking_uri(trained["uri"])  # runs:/ resolves against the global store
    try:
        model_dir = mlflow.artifacts.download_artifacts(
            artifact_uri=trained["result"].model_uri, dst_path=str(tmp_path / "model")
        )
    finally:
        mlflow.set_tracking_uri(tracking_uri)
    new = make_region_table(10, seed=1).drop(columns=["landslide", "slope_deg"])
    work = tmp_path / "work"
    work.mkdir()
    data = work / "new.csv"
    new.to_csv(data, index=False)
    out = work / "preds.csv"
    code = run_main(
        predict_tabular.main, ["--model", model_dir, "--data", str(data), "--out", str(out), "--experiment", "p"]
    )
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR and "missing feature columns ['slope_deg']" in err and "\n" not in err
    assert sorted(p.name for p in work.iterdir()) == ["new.csv"]  # no output, no temporary leftovers
    assert mlflow.search_runs(experiment_names=["p"])["status"].tolist() == ["FAILED"]


def test_predict_bad_model_uri(tmp_path, tracking_uri, capsys):
    data = tmp_path / "new.csv"
    make_region_table(5).to_csv(data, index=False)
    out = tmp_path / "o.csv"
    code = run_main(
        predict_tabular.main,
        ["--model", str(tmp_path / "nomodel"), "--data", str(data), "--out", str(out), "--experiment", "p"],
    )
    assert code == EXIT_USER_ERROR and "model not found" in capsys.readouterr().err
    assert not out.exists()
    assert mlflow.search_runs(experiment_names=["p"])["status"].tolist() == ["FAILED"]


def test_cli_subprocess_one_line_error(tmp_path, tracking_uri):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env.pop("LANDSLIDE_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.train_tabular", "--data", str(tmp_path / "missing.csv")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: data file not found: {tmp_path / 'missing.csv'} (expected a CSV or Parquet table)"
    ]
    assert mlflow.search_runs(experiment_names=["train_tabular"])["status"].tolist() == ["FAILED"]


def test_grouped_cv_and_string_target(tmp_path, tracking_uri, capsys):
    df = make_region_table(500, seed=4)
    df["cell"] = (np.floor((df["lon"] - 85) * 4) * 4 + np.floor((df["lat"] - 27.5) * 4)).astype(int)
    df["landslide"] = np.where(df["landslide"] == 1, "slide", "stable")
    data = tmp_path / "g.parquet"
    df.to_parquet(data)
    code = run_main(
        train_tabular.main,
        [
            "--data",
            str(data),
            "--positive",
            "slide",
            "--group",
            "cell",
            "--drop",
            "lon,lat",
            "--folds",
            "3",
            "--max-rounds",
            "60",
            "--experiment",
            "g",
        ],
    )
    out = capsys.readouterr().out
    assert code == 0 and "grouped by cell" in out and "roc_auc" in out
    run = mlflow.search_runs(experiment_names=["g"]).iloc[0]
    oof = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run["run_id"], artifact_path="oof_predictions.csv"))
    cell_of = df.set_index("region_id")["cell"]
    folds_per_cell = oof.assign(cell=cell_of.loc[oof["region_id"]].to_numpy()).groupby("cell")["fold"].nunique()
    assert (folds_per_cell == 1).all()
    assert oof["y_true"].sum() == (df["landslide"] == "slide").sum()


def test_logged_input_example_is_what_the_product_scores(trained, tmp_path, capsys):
    """Issue 17 item 6: the input example and signature in the MLflow UI are level names (not the Booster's
    float codes); fed back to predict_tabular it scores with no unseen level, and MLflow's pyfunc (what
    ``mlflow models serve`` runs) gives the same probabilities."""
    from mlflow.models import Model

    uri, result = trained["uri"], trained["result"]
    mlflow.set_tracking_uri(uri)
    local = mlflow.artifacts.download_artifacts(artifact_uri=result.model_uri, dst_path=str(tmp_path / "m"))
    logged = Model.load(local)
    example = logged.load_input_example(local)
    assert isinstance(example, pd.DataFrame) and len(example) > 0
    model = load_tabular_model(result.model_uri, tracking_uri=uri)
    for col, levels in model.categorical_levels_.items():
        values = set(example[col].dropna().astype(str))
        assert values and values <= set(levels), (col, values, levels)  # names, not codes like '1.0'
    inputs = {c["name"]: c["type"] for c in logged.signature.inputs.to_dict()}
    assert inputs["lithology"] == "string" and list(inputs) == model.feature_names_
    csv = tmp_path / "example.csv"
    example.to_csv(csv, index=False)
    out = tmp_path / "scores.csv"
    capsys.readouterr()
    code = run_main(
        predict_tabular.main, ["--model", result.model_uri, "--data", str(csv), "--out", str(out), "--json"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning" not in captured.err
    scores = pd.read_csv(out)
    assert len(scores) == len(example) and scores["p_landslide"].between(0, 1).all()
    pyfunc = mlflow.pyfunc.load_model(result.model_uri)
    got = pyfunc.predict(example)
    np.testing.assert_allclose(got["p_landslide"].to_numpy(), scores["p_landslide"].to_numpy(), rtol=1e-6)
    np.testing.assert_array_equal(got["label"].to_numpy(), scores["label"].to_numpy())
