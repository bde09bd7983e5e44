"""Imagery data sources: band names, the L4S HDF5 layouts, the cache, synthetic patches and splits.

Nothing here imports torch at module import (``fusion`` reads patches through this package).
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_getattr

if TYPE_CHECKING:
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
    from imagery.data.splits import (
        contiguous_folds,
        holdout_split,
        kfold_splits,
        read_groups,
        read_splits,
        write_splits,
    )
    from imagery.data.synthetic import synth_patch, write_synthetic_l4s

# name -> module: imported on first use (PEP 562), so importing one submodule stays cheap
_LAZY = {
    "BAND_ALIASES": "imagery.data.bands",
    "BANDS": "imagery.data.bands",
    "KNOWN_BANDS": "imagery.data.bands",
    "L4S_BAND_MEANS": "imagery.data.bands",
    "L4S_CLIP_MAX": "imagery.data.bands",
    "MODEL_UNITS": "imagery.data.bands",
    "N_BANDS": "imagery.data.bands",
    "band_index": "imagery.data.bands",
    "band_indices": "imagery.data.bands",
    "canonical_band": "imagery.data.bands",
    "canonical_bands": "imagery.data.bands",
    "to_model_units": "imagery.data.bands",
    "build_cache": "imagery.data.cache",
    "cache_info": "imagery.data.cache",
    "open_cache": "imagery.data.cache",
    "L4SDataset": "imagery.data.datasets",
    "load_patches": "imagery.data.datasets",
    "LAYOUTS": "imagery.data.l4s",
    "PatchFile": "imagery.data.l4s",
    "detect_layout": "imagery.data.l4s",
    "list_patch_files": "imagery.data.l4s",
    "normalize_split": "imagery.data.l4s",
    "read_image": "imagery.data.l4s",
    "read_mask": "imagery.data.l4s",
    "read_patch_files": "imagery.data.l4s",
    "split_dirs": "imagery.data.l4s",
    "write_image": "imagery.data.l4s",
    "write_mask": "imagery.data.l4s",
    "PatchSet": "imagery.data.patches",
    "contiguous_folds": "imagery.data.splits",
    "holdout_split": "imagery.data.splits",
    "kfold_splits": "imagery.data.splits",
    "read_groups": "imagery.data.splits",
    "read_splits": "imagery.data.splits",
    "write_splits": "imagery.data.splits",
    "synth_patch": "imagery.data.synthetic",
    "write_synthetic_l4s": "imagery.data.synthetic",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


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
