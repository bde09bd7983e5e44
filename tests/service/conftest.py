"""Small real models shared by the service tests (built once per session)."""

from __future__ import annotations

from typing import Any

import pytest

from fusion.demo.paired import PairedConfig, make_paired_regions
from fusion.stacking import StackingFuser
from imagery.inference import load_segmenter
from tabular.serving import load_tabular_model
from tests.fusion.helpers import oof_pair, segmenter_folder, tabular_model_folder

FEATURES = ["slope_deg", "relief_m", "rain_7d_mm", "soil_moisture", "ndvi"]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    tmp = tmp_path_factory.mktemp("models")
    pairs = make_paired_regions(PairedConfig(n_regions=60, size=16, seed=0))
    tab = load_tabular_model(str(tabular_model_folder(pairs.table, FEATURES, tmp / "tab")))
    seg = load_segmenter(str(segmenter_folder(tmp / "seg")), device="cpu")
    t, i = oof_pair()
    fus = StackingFuser().fit_oof(t, i)
    return tab, seg, fus
