"""Sentinel-2 (Landslide4Sense) patch segmentation with the RAU-Net family, packaged by role.

* :mod:`imagery.data`: data sources (L4S HDF5 layouts, the memory-mapped cache, synthetic patches),
  band names and splits; no torch at import.
* :mod:`imagery.transforms`: cleaning, normalisation, feature engineering, augmentation, and the
  :class:`~imagery.transforms.preprocess.Preprocessor` that turns raw patches into model inputs.
* :mod:`imagery.models`: the network registry (encoder + decoder + head by name).
* :mod:`imagery.training`: configuration, losses, optimisers and schedules, the training loop and the
  train/validate/test protocol. It may import ``inference``; ``inference`` never imports it.
* :mod:`imagery.inference`: the trained :class:`~imagery.inference.segmenter.Segmenter`, post-processing,
  metrics, evaluation, patch and scene prediction, and logging/loading models to and from MLflow.
* :mod:`imagery.device` (CPU/CUDA and precision) and :mod:`imagery.plot` (patch figures) serve all of them.
"""
