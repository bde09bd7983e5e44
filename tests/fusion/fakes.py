"""Tiny stand-in models with the tabular / segmenter interfaces (no LightGBM, no torch)."""

from __future__ import annotations

import numpy as np
import pandas as pd


class FakeTabular:
    """P(landslide) = sigmoid(slope_deg / 10 - 3); explain: the feature with the largest |value|."""

    def __init__(self, features: tuple[str, ...] = ("slope_deg", "rain_7d_mm")) -> None:
        self.feature_names_ = list(features)
        self.threshold_ = 0.5
        self.calls = 0

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        self.calls += 1
        p = 1 / (1 + np.exp(-(X["slope_deg"].to_numpy(float) / 10 - 3)))
        return np.column_stack([1 - p, p])

    def explain(self, X: pd.DataFrame, top_k: int = 3) -> pd.DataFrame:
        return pd.DataFrame(
            {"reason_1_feature": ["slope_deg"] * len(X), "reason_1_value": X["slope_deg"], "reason_1_shap": 0.5},
            index=X.index,
        )


class FakeSegmenter:
    """Landslide probability = band 0 of the patch clipped to [0, 1]; patch probability = its max."""

    threshold = 0.5
    channel_set = 23

    def __init__(self) -> None:
        self.seen = 0

    def predict(self, images: np.ndarray, batch_size: int = 16) -> dict[str, np.ndarray]:
        x = np.asarray(images, dtype=np.float32)
        self.seen += len(x)
        prob = np.clip(x[:, 0], 0, 1)
        return {
            "prob": prob,
            "mask": (prob > self.threshold).astype(np.uint8),
            "patch_prob": prob.reshape(len(x), -1).max(1),
        }
