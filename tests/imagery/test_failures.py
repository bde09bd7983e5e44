"""Imagery commands refuse bad input and recover exactly: all-invalid patches, the plain layout's one
split, resume with other settings, SIGTERM and SIGKILL, and what they print (issue 13)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from common.cli import run_main
from imagery.data import write_image, write_synthetic_l4s
from pipelines import evaluate_imagery, prepare_imagery, train_imagery

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--width",
    "4",
    "--channels",
    "14",
    "--head",
    "mono",
    "--bn-momentum",
    "0.1",
    "--no-progress",
    "--batch-size",
    "4",
    "--lr",
    "0.003",
    "--schedule",
    "constant",
]


@pytest.fixture
def l4s(tmp_path: Path) -> Path:
    return write_synthetic_l4s(tmp_path / "l4s", n_patches=8, seed=1, size=32)


def test_all_invalid_image_is_a_bad_file_everywhere(l4s: Path, tmp_path: Path, tracking_uri: str, capsys) -> None:
    write_image(l4s / "img" / "image_3.h5", np.full((14, 32, 32), np.nan, np.float32))
    assert run_main(prepare_imagery.main, ["--data", str(l4s), "--out", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "image_3.h5: every value is NaN/Inf" in err and err.count("\n") == 1
    assert not (tmp_path / "cache" / "train_images.npy").exists()
    assert run_main(train_imagery.main, [*TINY, "--data", str(l4s), "--epochs", "1"]) == 2
    assert "image_3.h5: every value is NaN/Inf" in capsys.readouterr().err
    assert run_main(evaluate_imagery.main, ["--model", str(tmp_path), "--data", str(l4s), "--split", "train"]) == 2
    assert "every value is NaN/Inf" in capsys.readouterr().err


def test_partly_invalid_images_are_cleaned_and_their_share_logged(l4s: Path, tracking_uri: str, capsys) -> None:
    img = np.ones((14, 32, 32), np.float32)
    img[:, :4, :] = np.nan  # 1/8 of the values
    write_image(l4s / "img" / "image_2.h5", img)
    out = train_imagery.run([*TINY, "--data", str(l4s), "--epochs", "1"])
    share = mlflow.MlflowClient().get_run(out.run_id).data.metrics["nonfinite_share"]
    assert share == pytest.approx(14 * 4 * 32 / (8 * 14 * 32 * 32))


def test_plain_layout_has_one_split(l4s: Path, tmp_path: Path, tracking_uri: str, capsys) -> None:
    argv = ["--data", str(l4s), "--out", str(tmp_path / "cache"), "--split", "train", "val"]
    assert run_main(prepare_imagery.main, argv) == 2
    err = capsys.readouterr().err
    assert "plain layout (img/ + mask/) has one split" in err and not (tmp_path / "cache" / "index.json").exists()


def test_train_prints_what_it_made(tmp_path: Path, tracking_uri: str, capsys) -> None:
    assert run_main(train_imagery.main, [*TINY, "--epochs", "1", "--n-synthetic", "6", "--synthetic-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "run_id: " in out and "model_uris: runs:/" in out
    assert (
        run_main(train_imagery.main, [*TINY, "--epochs", "1", "--n-synthetic", "6", "--synthetic-size", "32", "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model_uris"][0].startswith("runs:/") and len(summary["run_id"]) == 32
    names = [r.info.run_name for r in mlflow.search_runs(search_all_experiments=True, output_format="list")]
    assert len(set(names)) == len(names)  # the same seed twice: two names, never a seeded collision


def test_resume_with_other_settings_is_refused(tmp_path: Path, tracking_uri: str, capsys) -> None:
    ck = tmp_path / "ck"
    base = [*TINY, "--n-synthetic", "6", "--synthetic-size", "32", "--checkpoint-dir", str(ck)]
    assert run_main(train_imagery.main, [*base, "--epochs", "2"]) == 0
    capsys.readouterr()
    assert run_main(train_imagery.main, [*base, "--epochs", "2", "--resume", "--width", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.width: 4 -> 8" in err and "size mismatch" not in err
    assert run_main(train_imagery.main, [*base, "--epochs", "2", "--resume", "--lr", "0.01"]) == 2
    assert "optim.lr: 0.003 -> 0.01" in capsys.readouterr().err


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _epochs_done(ck: Path) -> int:
    path = ck / "checkpoint.pt"
    if not path.is_file():
        return 0
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch_done"])
    except Exception:  # noqa: BLE001 - being replaced right now
        return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_training_resumes_the_same_run(tmp_path: Path, sig: signal.Signals, _template_store: Path) -> None:
    """A real process killed mid-training: SIGTERM ends the run KILLED (SIGKILL cannot be caught and leaves
    it RUNNING); --resume continues that same run to FINISHED with every epoch's metrics."""
    shutil.copyfile(_template_store, tmp_path / "store.db")  # an already-migrated store: no 2 s of migrations
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    ck = tmp_path / "ck"
    epochs = 12
    argv = [
        sys.executable,
        "-m",
        "pipelines.train_imagery",
        *TINY,
        "--n-synthetic",
        "8",
        "--synthetic-size",
        "32",
        "--epochs",
        str(epochs),
        "--checkpoint-dir",
        str(ck),
        "--tracking-uri",
        uri,
        "--seed",
        "3",
    ]
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while _epochs_done(ck) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    client = mlflow.MlflowClient(uri)
    run_id = json.loads((ck / "run.json").read_text())["run_id"]
    status = client.get_run(run_id).info.status
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err
        assert status == "KILLED"
    else:
        assert proc.returncode == -signal.SIGKILL and status == "RUNNING"
    done = _epochs_done(ck)
    assert 2 <= done < epochs
    res = subprocess.run([*argv, "--resume"], cwd=tmp_path, env=_cli_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["landslide.resumed"] == "1"
    steps = [m.step for m in client.get_metric_history(run_id, "val_ls_f1")]
    assert sorted(set(steps)) == list(range(epochs))  # the epochs before and after the kill, in one run
    exp = client.get_run(run_id).info.experiment_id
    assert len(client.search_runs([exp])) == 1
