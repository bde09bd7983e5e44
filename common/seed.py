"""Seeding without hidden global state where avoidable: prefer passing ``np.random.Generator``s."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's and NumPy's legacy global generators (for third-party code) and return a Generator."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    return np.random.default_rng(seed)
