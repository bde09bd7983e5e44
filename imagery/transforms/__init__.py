"""From raw patches to model inputs: cleaning, normalisation, engineered channels, augmentation."""

from typing import TYPE_CHECKING

from common.lazy import lazy_getattr

if TYPE_CHECKING:
    from imagery.transforms.augment import augment_batch
    from imagery.transforms.features import (
        CHANNEL_SETS,
        CHANNELS,
        DEFAULT_CHANNEL_SET,
        channel_names,
        compute_features,
        n_channels,
    )
    from imagery.transforms.normalize import MODES, Normalizer, clean_image
    from imagery.transforms.preprocess import Preprocessor, fit_normalizer

# name -> module: imported on first use (PEP 562), so importing one submodule stays cheap
_LAZY = {
    "augment_batch": "imagery.transforms.augment",
    "CHANNEL_SETS": "imagery.transforms.features",
    "CHANNELS": "imagery.transforms.features",
    "DEFAULT_CHANNEL_SET": "imagery.transforms.features",
    "channel_names": "imagery.transforms.features",
    "compute_features": "imagery.transforms.features",
    "n_channels": "imagery.transforms.features",
    "MODES": "imagery.transforms.normalize",
    "Normalizer": "imagery.transforms.normalize",
    "clean_image": "imagery.transforms.normalize",
    "Preprocessor": "imagery.transforms.preprocess",
    "fit_normalizer": "imagery.transforms.preprocess",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = [
    "CHANNELS",
    "CHANNEL_SETS",
    "DEFAULT_CHANNEL_SET",
    "MODES",
    "Normalizer",
    "Preprocessor",
    "augment_batch",
    "channel_names",
    "clean_image",
    "compute_features",
    "fit_normalizer",
    "n_channels",
]
