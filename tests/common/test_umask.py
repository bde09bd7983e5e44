"""Outputs follow the user's umask: a colleague on a shared drive can read what a command wrote (the
staging files and folders of ``tempfile`` are owner-only and must not stay so after the rename)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.atomic import atomic_dir, atomic_write, current_umask


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_the_umask_in_force(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask  # reading it leaves it as it was


@pytest.mark.parametrize("replace", [False, True])
def test_output_folders_and_files_follow_the_umask(tmp_path: Path, umask: int, replace: bool) -> None:
    target = tmp_path / "out"
    with atomic_dir(target, replace=replace) as tmp:
        (tmp / "sub").mkdir()
        with atomic_write(tmp / "sub" / "a.json") as fh:
            fh.write("{}")
        (tmp / "b.txt").write_text("b")
    assert _mode(target) == 0o777 & ~umask
    assert _mode(target / "sub") == 0o777 & ~umask
    assert _mode(target / "sub" / "a.json") == 0o666 & ~umask
    assert _mode(target / "b.txt") == 0o666 & ~umask


def test_a_single_file_follows_the_umask_in_force(tmp_path: Path, umask: int) -> None:
    with atomic_write(tmp_path / "x.csv") as fh:
        fh.write("a\n")
    assert _mode(tmp_path / "x.csv") == 0o666 & ~umask


@pytest.mark.parametrize(
    "path", ["serve_jobs/job/report.html", "assess_out/report.html", "quickstart_out/world/a.tif", "mlruns/1/x"]
)
def test_runtime_folders_are_ignored_by_git(path: str) -> None:
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "check-ignore", "-q", path], cwd=root, check=False)
    assert done.returncode == 0, f"{path} is not ignored by .gitignore"
