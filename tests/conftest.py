"""Shared fixtures: an isolated MLflow store per test and the optional real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LANDSLIDE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _engine_pinned(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Commands run the segmenter on torch fp32 in tests (``imagery.inference.engine``: no timing of every
    path for every tiny test model) with a throw-away engine cache; the engine's own tests unpin it."""
    os.environ.setdefault("LANDSLIDE_ENGINE_CANDIDATES", "torch-fp32")
    # training in fp32 too, so exact-value tests hold on every CPU (bf16 is the default where the CPU has it)
    os.environ.setdefault("LANDSLIDE_TRAIN_PRECISION", "fp32")
    os.environ.setdefault("LANDSLIDE_ENGINE_CACHE", str(tmp_path_factory.mktemp("engine-cache")))


@pytest.fixture(scope="session")
def _template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, already-migrated MLflow SQLite database (creating one costs ~2 s of migrations)."""
    import mlflow

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.tracking.MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _template_store: Path) -> str:
    """A fresh SQLite MLflow store in the test's temp folder, exported as MLFLOW_TRACKING_URI."""
    import shutil

    import mlflow

    (tmp_path / "mlruns").mkdir(exist_ok=True)
    db = tmp_path / "mlruns" / "mlflow.db"
    shutil.copyfile(_template_store, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


def shared_dataset(name: str) -> Path:
    """Path of ``../shared/data/<name>``; skips the test cleanly where it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not available: {SHARED_DATA}")
    return SHARED_DATA
