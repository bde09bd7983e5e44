"""Killed runs (issue 17 item 13): what a SIGKILLed command leaves behind is cleaned by the next run.

* A process killed mid-write leaves a hidden staging folder and a ``RUNNING`` MLflow run; the next run of
  the same command (same output folder, same experiment) removes the one and marks the other ``KILLED``,
  and so does ``python -m pipelines.clean`` (``--dry-run`` lists without changing anything).
* Staging entries and runs of a live process, or of another host, are never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest

from common import atomic
from common.atomic import atomic_dir, atomic_write, host_tag, stale_staging
from common.tracking import HOST_TAG, PID_TAG, ensure_experiment, tracked_run
from pipelines import clean

ROOT = Path(__file__).resolve().parents[2]

_WRITER = textwrap.dedent(
    """
    import sys, time
    from common.atomic import atomic_dir
    from common.tracking import setup_tracking, tracked_run
    setup_tracking(sys.argv[1])
    with tracked_run("killtest") as run, atomic_dir(sys.argv[2]) as tmp:
        (tmp / "part.txt").write_text("half")
        print(run.info.run_id, flush=True)
        time.sleep(120)
    """
)


def _killed_writer(out: Path, uri: str) -> str:
    """Run a command that writes ``out`` inside a tracked run, SIGKILL it mid-write; returns its run id."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, uri, str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        run_id = proc.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert len(run_id) == 32, "the writer did not start its run"
    return run_id


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _staging(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.p*.tmp"))


@pytest.fixture(autouse=True)
def _fresh_clean_cache() -> None:
    atomic._CLEANED.clear()


def test_next_run_removes_stale_staging_and_marks_orphan_killed(tmp_path: Path, tracking_uri: str) -> None:
    out = tmp_path / "outputs" / "result"
    old_run = _killed_writer(out, tracking_uri)
    left = _staging(out.parent, "result")
    assert len(left) == 1 and (left[0] / "part.txt").read_text() == "half"  # what SIGKILL leaves today
    client = mlflow.MlflowClient(tracking_uri)
    assert client.get_run(old_run).info.status == "RUNNING"

    with tracked_run("killtest") as run, atomic_dir(out) as tmp:  # the same command, again
        (tmp / "part.txt").write_text("whole")
    assert _staging(out.parent, "result") == []
    assert (out / "part.txt").read_text() == "whole"
    assert client.get_run(old_run).info.status == "KILLED"
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert client.get_run(run.info.run_id).data.tags[PID_TAG] == str(os.getpid())


def test_other_commands_runs_and_live_staging_are_left_alone(tmp_path: Path, tracking_uri: str) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    other_exp = ensure_experiment("other-command")
    orphan_elsewhere = client.create_run(other_exp, tags={PID_TAG: str(_dead_pid()), HOST_TAG: host_tag()})
    live = tmp_path / f".table.csv.p{os.getpid()}@{host_tag()}.abcd1234.tmp.csv"  # this (live) process's staging
    live.write_text("being written")
    foreign = tmp_path / f".table.csv.p{_dead_pid()}@someotherhost.abcd1234.tmp.csv"  # another machine's
    foreign.write_text("x")
    dead_raster = tmp_path / f".map.tif.p{_dead_pid()}@{host_tag()}.abcd1234.part.tif"  # a killed CogWriter's
    dead_raster.write_text("x")
    with tracked_run("killtest"), atomic_write(tmp_path / "table.csv") as fh:
        fh.write("a\n")
    assert live.exists() and foreign.exists() and not dead_raster.exists()
    assert client.get_run(orphan_elsewhere.info.run_id).info.status == "RUNNING"  # not this command's run


def test_pipelines_clean_dry_run_then_clean(
    tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nested" / "result"
    old_run = _killed_writer(out, tracking_uri)
    stale = _staging(out.parent, "result")
    assert len(stale) == 1
    live = tmp_path / f".model.pt.p{os.getpid()}@{host_tag()}.abcd1234.tmp.pt"
    live.write_text("being written")
    client = mlflow.MlflowClient(tracking_uri)
    live_run = client.create_run(ensure_experiment("killtest"), tags={PID_TAG: str(os.getpid()), HOST_TAG: host_tag()})

    assert clean.main(["--path", str(tmp_path), "--tracking-uri", tracking_uri, "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert f"would remove {stale[0]}" in said and f"would mark run {old_run}" in said
    assert stale[0].exists() and client.get_run(old_run).info.status == "RUNNING"

    assert clean.main(["--path", str(tmp_path), "--tracking-uri", tracking_uri]) == 0
    said = capsys.readouterr().out
    assert f"removed {stale[0]}" in said and f"marked run {old_run}" in said
    assert not stale[0].exists() and live.exists()
    assert client.get_run(old_run).info.status == "KILLED"
    assert client.get_run(live_run.info.run_id).info.status == "RUNNING"
    assert stale_staging(tmp_path, recursive=True) == []


def test_pipelines_clean_bad_path_is_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pipelines.clean", "--path", str(tmp_path / "nope")]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nope" in proc.stderr
    assert not (tmp_path / "mlruns").exists()
