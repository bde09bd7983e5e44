"""Small real models for pipeline tests: a LightGBM tabular model folder, a tiny segmenter folder, OOF runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def tabular_model_folder(table: pd.DataFrame, features: list[str], folder: Path, seed: int = 0) -> Path:
    """Fit a small LandslideClassifier on ``table[features]`` -> ``landslide`` and save it as a model folder."""
    from tabular.config import LGBMParams
    from tabular.model import LandslideClassifier
    from tabular.serving import BOOSTER_FILE, METADATA_FILE

    clf = LandslideClassifier(
        LGBMParams(num_boost_round=30, early_stopping_rounds=0, min_data_in_leaf=5, num_threads=1), seed=seed
    )
    clf.fit(table[features], table["landslide"].to_numpy())
    folder.mkdir(parents=True, exist_ok=True)
    clf._booster().save_model(str(folder / BOOSTER_FILE))
    (folder / METADATA_FILE).write_text(json.dumps(clf.metadata()), encoding="utf-8")
    return folder


def segmenter_folder(folder: Path, channel_set: int = 14, width: int = 2, seed: int = 0) -> Path:
    """An untrained tiny segmenter (dual head) saved as state dict + metadata (what load_segmenter reads)."""
    import torch

    from imagery.data.bands import BANDS
    from imagery.inference import SegmenterMeta, save_segmenter_files
    from imagery.models import create_model

    torch.manual_seed(seed)
    kwargs = {"in_channels": channel_set, "num_classes": 2, "head": "dual", "base_width": width}
    model = create_model("unet", **kwargs)
    meta = SegmenterMeta("unet", kwargs, channel_set, threshold=0.5, band_order=list(BANDS), head="dual")
    save_segmenter_files(model, meta, folder)
    return folder


def log_oof_run(
    experiment: str, oof: pd.DataFrame, *, params: dict[str, str] | None = None, extra: dict[str, dict] | None = None
) -> str:
    """An MLflow run holding ``oof_predictions.csv`` (+ params and JSON artifacts); returns its id."""
    import mlflow

    from common.tracking import ensure_experiment

    with mlflow.start_run(experiment_id=ensure_experiment(experiment)) as run:
        if params:
            mlflow.log_params(params)
        mlflow.log_text(oof.to_csv(index=False), "oof_predictions.csv")
        for name, data in (extra or {}).items():
            mlflow.log_dict(data, name)
    return run.info.run_id


def oof_pair(n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    pt = 1 / (1 + np.exp(-(1.2 * (2 * y - 1) + rng.normal(0, 1.2, n))))
    pi = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(0, 2.0, n))))
    ids = np.arange(n)
    return (
        pd.DataFrame({"region_id": ids, "y_true": y, "p_oof": pt, "fold": ids % 5}),
        pd.DataFrame({"region_id": ids, "y_true": y, "p_oof": pi, "fold": ids % 2}),
    )
