"""Refused writes and unwritable stores end in one line, exit 2, no debris, a FAILED run (issue 13).

The read-only and full-disk cases mount a small tmpfs (they need root and skip otherwise); the
injected-error cases run everywhere.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from common.atomic import atomic_dir, atomic_path, check_free_space
from common.cli import UserError, run_main

ROOT = Path(__file__).resolve().parents[2]


def test_refused_write_is_one_line_naming_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    with pytest.raises(UserError, match=r"cannot write .*out\.h5: No space left on device \(errno 28\)"):
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(UserError, match="Read-only file system"):
        with atomic_dir(tmp_path / "folder") as staging:
            (staging / "a.txt").write_text("half")
            raise OSError(errno.EROFS, "Read-only file system")
    assert list(tmp_path.iterdir()) == []  # no temporary file or folder left
    with pytest.raises(UserError, match="not enough free space"):
        check_free_space(tmp_path, 10**15, what="a petabyte")


def test_atomic_dir_publishes_all_or_nothing(tmp_path: Path) -> None:
    out = tmp_path / "preds"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as staging:
            (staging / "mask_1.h5").write_text("x")
            raise RuntimeError("crash after the first item")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(out) as staging:
        (staging / "a.txt").write_text("a")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.txt").write_text("b")
    assert (out / "a.txt").read_text() == "a" and (out / "sub" / "b.txt").read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds"]


def test_atomic_dir_replace_swaps_the_whole_folder(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "part-old.parquet").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, replace=True) as staging:
            (staging / "part-0.parquet").write_text("new")
            raise RuntimeError("crash before the end")
    assert sorted(p.name for p in out.iterdir()) == ["part-old.parquet"]
    with atomic_dir(out, replace=True) as staging:
        (staging / "part-0.parquet").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["part-0.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


@pytest.fixture
def small_fs(tmp_path: Path):
    """Mount tmpfs folders: ``ro`` (read-only) and ``full`` (256 KiB); skip unless the test may mount."""
    mounts = []

    def mount(name: str, opts: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode(errors='replace').strip()[:80]})")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_output_folder(small_fs, tmp_path: Path, tracking_uri: str, capsys) -> None:
    from pipelines import predict_tabular
    from tabular.synthetic import make_region_table
    from tests.fusion.helpers import tabular_model_folder

    table = make_region_table(200, seed=0)
    model = tabular_model_folder(table, ["slope_deg", "rain_7d_mm", "ndvi"], tmp_path / "model")
    data = tmp_path / "new.csv"
    table.to_csv(data, index=False)
    ro = small_fs("ro", "ro,size=1m")
    out = ro / "preds.csv"
    code = run_main(predict_tabular.main, ["--model", str(model), "--data", str(data), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Read-only" in err and str(out) in err
    assert mlflow.search_runs(experiment_names=["predict_tabular"])["status"].tolist() == ["FAILED"]


def test_full_disk_cache_is_refused_before_writing(small_fs, tmp_path: Path, tracking_uri: str, capsys) -> None:
    from imagery.data import write_synthetic_l4s
    from pipelines import prepare_imagery

    src = write_synthetic_l4s(tmp_path / "l4s", n_patches=6, seed=0, size=64)
    full = small_fs("full", "size=256k")
    code = run_main(prepare_imagery.main, ["--data", str(src), "--out", str(full / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "not enough free space" in err and err.count("\n") == 1
    assert not [p for p in full.rglob("*") if p.is_file()]  # nothing written, no temporary file left
    assert not (full / "cache").exists()  # ... and no empty folder (issue 17)
    assert mlflow.search_runs(experiment_names=["imagery-prepare"])["status"].tolist() == ["FAILED"]


def test_full_disk_scene_output_is_one_line_naming_the_users_path(small_fs, tmp_path: Path, tracking_uri: str, capfd):
    """predict_scene --out on a full disk: one line naming --out (not the hidden staging folder), no libtiff lines."""
    from fusion.demo.synthetic_scene import write_synthetic_scene
    from pipelines import predict_scene
    from tests.scenes.helpers import L2A_BANDS, tiny_model

    scene = write_synthetic_scene(tmp_path / "scene", 300, cloud_fraction=0.0)
    model = tiny_model(tmp_path / "model", L2A_BANDS, prob=None)  # random weights: an incompressible map
    full = small_fs("full", "size=300k")
    out = full / "maps"
    argv = ["--scene", str(scene), "--model", str(model), "--out", str(out), "--no-progress"]
    assert run_main(predict_scene.main, [*argv, "--tracking-uri", tracking_uri]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot write {out}" in err and "No space left" in err, err
    assert ".tmp" not in err and "tiff" not in err.lower().replace(".tif", "")
    assert not list(full.iterdir())


def test_read_only_tracking_store_fails_fast(small_fs, tmp_path: Path) -> None:
    store = small_fs("store", "size=8m")
    make = f"import mlflow; mlflow.MlflowClient('sqlite:///{store / 'mlflow.db'}').search_experiments()"
    subprocess.run([sys.executable, "-c", make], check=True, capture_output=True)  # a real store (no open handle here)
    if subprocess.run(["mount", "-o", "remount,ro", str(store)], capture_output=True).returncode:  # ... then read-only
        pytest.skip("cannot remount the tmpfs read-only here")
    t0 = time.perf_counter()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.train_tabular",
            "--n-regions",
            "100",
            "--tracking-uri",
            f"sqlite:///{store / 'mlflow.db'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"},
    )
    assert res.returncode == 2 and time.perf_counter() - t0 < 60
    assert (
        res.stderr.startswith("error: tracking store") and "not writable" in res.stderr and res.stderr.count("\n") == 1
    )
