from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from common.atomic import atomic_path, atomic_write
from common.cli import EXIT_USER_ERROR, InputNotFoundError, UserError, run_main
from common.fingerprint import fingerprint_dataframe, fingerprint_files
from common.tracking import flatten_params, resolve_tracking_uri, tracked_run

ROOT = Path(__file__).resolve().parents[2]


def test_atomic_write_leaves_no_file_on_error(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_files_get_the_umask_mode_not_owner_only(tmp_path):
    import os
    import stat

    from common.atomic import FILE_MODE
    from common.geo import Grid, write_cog

    with atomic_write(tmp_path / "a.csv") as fh:
        fh.write("x\n")
    grid = Grid.from_bounds((0, 0, 160, 160), "EPSG:32633", 10)
    write_cog(tmp_path / "b.tif", np.zeros((16, 16), "float32"), grid, 0)
    plain = tmp_path / "c.txt"
    plain.write_text("x")
    for name in ("a.csv", "b.tif"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == FILE_MODE == stat.S_IMODE(os.stat(plain).st_mode)


def test_atomic_path_replaces_existing_only_on_success(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise ValueError
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".txt"
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_run_main_maps_user_errors_to_one_line(capsys):
    def main(argv):
        raise InputNotFoundError("data file not found: /nope.csv (expected a CSV or Parquet table)")

    assert run_main(main, []) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.strip() == "error: data file not found: /nope.csv (expected a CSV or Parquet table)"
    assert "Traceback" not in err

    def bad_value(argv):
        raise UserError("column 'slope' has non-numeric value 'x'\n(expected numbers)")

    assert run_main(bad_value, []) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: column 'slope' has non-numeric value 'x' (expected numbers)\n"


def test_run_main_maps_path_errors_from_the_machine(tmp_path, capsys):
    def main(argv):
        open(tmp_path / "missing" / "x.csv")  # noqa: SIM115 - the OSError is the point

    assert run_main(main, []) == EXIT_USER_ERROR
    assert capsys.readouterr().err.startswith("error: No such file or directory: ")


@pytest.mark.parametrize(
    "exc",
    [
        ZeroDivisionError(),
        ValueError("shapes (3,) and (4,) not aligned"),
        KeyError("x"),
        FileNotFoundError("no filename: a bug, not a user's path"),
    ],
)
def test_run_main_keeps_tracebacks_for_bugs(exc):
    def main(argv):
        raise exc

    with pytest.raises(type(exc)):
        run_main(main, [])


def test_cli_bug_exits_1_with_traceback_and_user_error_exits_2(tmp_path):
    """In a real process: a bug keeps its traceback (exit 1), a user error is one line (exit 2)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom common.cli import run_main, UserError\n"
        "def main(argv):\n    if argv[0] == 'bug':\n        return [][1]\n"
        "    raise UserError('--data x.csv: not found')\n"
        "raise SystemExit(run_main(main, sys.argv[1:]))\n"
    )
    bug = subprocess.run([sys.executable, "-c", code, "bug"], capture_output=True, text=True, cwd=ROOT)
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "IndexError" in bug.stderr
    user = subprocess.run([sys.executable, "-c", code, "user"], capture_output=True, text=True, cwd=ROOT)
    assert user.returncode == 2 and user.stderr == "error: --data x.csv: not found\n"


def test_fingerprint_changes_with_content(tmp_path):
    a = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    b = a.copy()
    b.loc[2, "x"] = 4
    fa, fb = fingerprint_dataframe(a), fingerprint_dataframe(b)
    assert fa.sha256 != fb.sha256
    assert (fa.rows, fa.columns) == (3, 2)
    assert fingerprint_dataframe(a.copy()).sha256 == fa.sha256
    (tmp_path / "f1").write_bytes(b"abc")
    f1 = fingerprint_files([tmp_path / "f1"])
    (tmp_path / "f1").write_bytes(b"abd")
    assert fingerprint_files([tmp_path / "f1"]).sha256 != f1.sha256


def test_tracking_uri_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == "sqlite:///mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/other.db")
    assert resolve_tracking_uri() == "sqlite:////tmp/other.db"
    assert resolve_tracking_uri("sqlite:////tmp/flag.db") == "sqlite:////tmp/flag.db"


@dataclasses.dataclass
class _Inner:
    lr: float = 0.001


@dataclasses.dataclass
class _Config:
    name: str = "demo"
    folds: int = 5
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    cols: tuple[str, ...] = ("a", "b")


def test_flatten_params_nested():
    flat = flatten_params(dataclasses.asdict(_Config()))
    assert flat == {"name": "demo", "folds": "5", "inner.lr": "0.001", "cols": '["a", "b"]'}


def test_tracked_run_logs_config_and_marks_failed(tracking_uri):
    with tracked_run("unit-test", _Config()) as ok:
        mlflow.log_metric("m", 1.0)
    with pytest.raises(ValueError):
        with tracked_run("unit-test", _Config()) as bad:
            raise ValueError("bad input")
    client = mlflow.tracking.MlflowClient(tracking_uri)
    ok_run = client.get_run(ok.info.run_id)
    assert ok_run.info.status == "FINISHED"
    assert ok_run.data.params["inner.lr"] == "0.001"
    assert "git_commit" in ok_run.data.tags
    assert client.get_run(bad.info.run_id).info.status == "FAILED"
    cfg_path = mlflow.artifacts.download_artifacts(run_id=ok.info.run_id, artifact_path="config.json")
    assert json.loads(open(cfg_path).read())["inner"] == {"lr": 0.001}
