"""From raw patches to model inputs: cleaning, normalisation, engineered channels, augmentation."""

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
