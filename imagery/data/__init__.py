"""Imagery data sources: band names, the L4S HDF5 layouts, the cache, synthetic patches and splits.

Nothing here imports torch at module import (``fusion`` reads patches through this package).
"""

from imagery.data.bands import (
    BAND_ALIASES,
    BANDS,
    KNOWN_BANDS,
    L4S_BAND_MEANS,
    L4S_CLIP_MAX,
    MODEL_UNITS,
    N_BANDS,
    band_index,
    band_indices,
    canonical_band,
    canonical_bands,
    to_model_units,
)
from imagery.data.cache import build_cache, cache_info, open_cache
from imagery.data.datasets import L4SDataset, load_patches
from imagery.data.l4s import (
    LAYOUTS,
    PatchFile,
    detect_layout,
    list_patch_files,
    normalize_split,
    read_image,
    read_mask,
    read_patch_files,
    split_dirs,
    write_image,
    write_mask,
)
from imagery.data.patches import PatchSet
from imagery.data.splits import contiguous_folds, holdout_split, kfold_splits, read_groups, read_splits, write_splits
from imagery.data.synthetic import synth_patch, write_synthetic_l4s

__all__ = [
    "BANDS",
    "BAND_ALIASES",
    "KNOWN_BANDS",
    "MODEL_UNITS",
    "canonical_band",
    "canonical_bands",
    "to_model_units",
    "L4S_BAND_MEANS",
    "L4S_CLIP_MAX",
    "LAYOUTS",
    "N_BANDS",
    "L4SDataset",
    "PatchFile",
    "PatchSet",
    "band_index",
    "band_indices",
    "build_cache",
    "cache_info",
    "contiguous_folds",
    "detect_layout",
    "holdout_split",
    "kfold_splits",
    "list_patch_files",
    "load_patches",
    "normalize_split",
    "open_cache",
    "read_groups",
    "read_image",
    "read_mask",
    "read_patch_files",
    "read_splits",
    "split_dirs",
    "synth_patch",
    "write_image",
    "write_mask",
    "write_splits",
    "write_synthetic_l4s",
]
