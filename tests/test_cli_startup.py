"""``python -m pipelines.<any> --help`` answers at once: parsing --help imports neither torch nor LightGBM
(they load when a command runs). Covers every ``pipelines/*.py`` command, also ones added later.

MLflow is not checked yet: the commands with model-registry flags (``pipelines._register``, ``common.registry``)
import it at module level; checking it too is the next step (add "mlflow" to HEAVY once they import it lazily).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(p.stem for p in (ROOT / "pipelines").glob("*.py") if not p.stem.startswith("_"))
# commands whose flags are declared by torch modules (model, loss and attention registries), or (quickstart) whose
# job lives in the command module itself; their --help still loads torch
SLOW_HELP = {"train_imagery", "study_tables", "quickstart"}

PROBE = """
import contextlib, io, json, runpy, sys, time
HEAVY = ("torch", "lightgbm")
out = {}
for name in sys.argv[1:]:
    t = time.perf_counter()
    sys.argv = [name, "--help"]
    text = io.StringIO()
    code = None
    with contextlib.redirect_stdout(text):
        try:
            runpy.run_module("pipelines." + name, run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = e.code
    heavy = [m for m in HEAVY if m in sys.modules]
    out[name] = {"code": code, "usage": text.getvalue()[:200], "heavy": heavy, "s": time.perf_counter() - t}
    if heavy:
        break  # later commands would be judged with these already loaded
print(json.dumps(out))
"""


def test_help_imports_no_heavy_library() -> None:
    names = [n for n in COMMANDS if n not in SLOW_HELP]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", PROBE, *names], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr[-2000:]  # HEAVY in PROBE: torch, lightgbm
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for name in names:
        assert name in got, f"not reached: {name}"
        assert got[name]["heavy"] == [], f"pipelines.{name} --help imported {got[name]['heavy']}"
        assert got[name]["code"] == 0 and got[name]["usage"].startswith("usage:"), (name, got[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_HELP & set(COMMANDS)))
def test_known_slow_help_still_answers(name: str) -> None:
    """The exceptions keep a working --help (and stay listed: remove a name once it imports no torch)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", f"pipelines.{name}", "--help"], capture_output=True, text=True, timeout=300, env=env
    )
    assert res.returncode == 0 and res.stdout.startswith("usage:"), res.stderr[-1000:]
