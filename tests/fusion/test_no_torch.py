"""fusion must work without torch (it reaches imagery results only as arrays/tables)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import importlib.abc


class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.'):
            raise ImportError(f'torch is blocked in this test: {name}')
        return None


sys.meta_path.insert(0, BlockTorch())
import numpy as np
import fusion.crosscheck, fusion.patch_features, fusion.demo.paired, fusion.region_features
import fusion.regions, fusion.scoring, fusion.stacking, fusion.models, fusion.evaluation
from fusion.demo.paired import PairedConfig, make_paired_regions
pr = make_paired_regions(PairedConfig(n_regions=6, size=16, seed=0))
from fusion.region_features import imagery_region_features
imagery_region_features(np.zeros((2, 8, 8), np.float32), 0.5)
assert 'torch' not in sys.modules
print('ok')
"""


def test_fusion_imports_and_runs_with_torch_blocked() -> None:
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")
