"""Typed configuration of segmenter evaluation and prediction (``pipelines.evaluate_imagery``,
``pipelines.predict_imagery``); logged whole to MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

# Choices of the inference flags, here (no torch) so that a command's --help answers at once; implemented in
# imagery.inference.postprocess (TTA, morphology) and imagery.inference.engine (runtimes, precisions).
TtaMode = Literal["none", "rot4", "rot4flip"]
Morphology = Literal["none", "open", "close"]
Runtime = Literal["auto", "torch", "onnx"]
Precision = Literal["auto", "fp32", "bf16", "int8"]
TTA_MODES: tuple[str, ...] = get_args(TtaMode)
MORPHOLOGY: tuple[str, ...] = get_args(Morphology)
RUNTIMES: tuple[str, ...] = get_args(Runtime)
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: Default tile overlap for 128 px tiles, px: chosen by measurement (``tests/imagery/test_seams.py``; a 384 px
#: mosaic of the 11 real L4S patches predicted whole and cropped by 64 px, 99th percentile of the absolute
#: difference away from the edges): 0.38 at overlap 32, 0.24 at 48, 0.05 at 64 (2.25x the tiles of 32).
#: The stride (tile - overlap) should be a multiple of 16, the network's stride.
#: Re-measured with tile 128/256 x overlap 16/32/64 (``benchmarks/tiling_bench.py``, RESULTS.md "Tile size and
#: overlap"): only 128/64 keeps the seam p99 under 0.10; tile 256 halves the compute but its seams are 0.15-0.18.
DEFAULT_OVERLAP = 64

#: Default tiles per forward pass (CPU and GPU alike; on a GPU pass a larger ``--batch-size``, e.g. 64). Chosen by
#: measurement (bf16 copy, channels-last, the main output only, 2 threads, Xeon with AMX, idle): the width-8 model
#: ran 182 / 143 / 80 patches/s at batch 8 / 16 / 32 (the activations of a larger batch leave the caches), the
#: small RAU-Net 1 14.8 / 14.5 / 12.5; a smaller batch also holds less memory. Results do not depend on it.
DEFAULT_BATCH = 8

#: GDAL's raster block cache while a scene is predicted (``predict_scene``: the strip reader and the two COG
#: writers), MB. The reader walks down the scene in strips of 64 rows while every band's 512-row blocks stay in
#: use for 8 (10 m) to 48 (60 m) strips: one row of blocks of the 11 bands, SCL and the DEM is ~100 MB on a 10980
#: px tile, so a 64 MB cache decompressed every block again for each strip (161 / 107 / 94 ms per strip at 64 /
#: 128 / 256 MB, ``benchmarks/scene_read_bench.py``'s strips, loaded). At most this much more resident memory.
SCENE_CACHE_MB = 256


@dataclass
class EvalConfig:
    """``python -m pipelines.evaluate_imagery``: a logged model evaluated on a labelled split (L4S) or chip folder.

    ``tta``/``vote``/``morphology``/``threshold`` of ``None`` mean: use what is stored with the model.
    """

    model_uri: str = ""
    data: str = ""
    split: str = "test"
    layout: str | None = None
    #: georeferenced chip folders (``imagery.data.chips``)
    image_bands: list[str] | None = None
    image_scale: str = "auto"
    label_map: str | None = None
    tile: int = 128
    tta: str | None = None
    vote: bool | None = None
    morphology: str | None = None
    threshold: float | None = None
    batch_size: int = DEFAULT_BATCH
    device: str = "auto"
    runtime: str = "auto"
    seed: int = 42


@dataclass
class PredictConfig:
    """``python -m pipelines.predict_imagery``: masks, probability maps and overlays for patches or a scene.

    A scene (H, W, 14) larger than ``tile`` is cut into ``tile`` x ``tile`` tiles overlapping by
    ``overlap`` pixels and stitched with weights that fall off towards each tile's border.
    """

    model_uri: str = ""
    input: str = ""
    out: str = ""
    tta: str | None = None
    vote: bool | None = None
    morphology: str | None = None
    threshold: float | None = None
    batch_size: int = DEFAULT_BATCH
    tile: int = 128
    overlap: int = DEFAULT_OVERLAP
    overlays: bool = True
    device: str = "auto"
    runtime: str = "auto"
    seed: int = 42


@dataclass
class SceneConfig:
    """``python -m pipelines.predict_scene``: one Sentinel-2 scene in, landslide maps and polygons out.

    ``scene``: a band folder, ``.SAFE``, multi-band GeoTIFF (with ``bands`` naming its band order) or STAC
    item JSON (``imagery.data.sentinel2.open_scene``); ``dem``: any DEM GeoTIFF covering the scene, in any
    CRS. ``tile``/``overlap``/``batch_size``: the tiling (rows of tiles, blended overlaps) and tiles per
    forward pass; ``lanes``: each batch split over this many threads of one core each
    (:mod:`imagery.inference.lanes`; 0: automatic, 1: none). ``min_area_m2``: the smallest landslide polygon
    kept (default 500 m2: five 10 m pixels, the seed's own rule of flagging a patch at 5 landslide pixels).
    ``scl_mask``: SCL classes masked as nodata.
    ``fill_b10``: a model that needs B10 (cirrus) may run on an L2A product, which has none, with B10 filled
    by its L4S mean (a warning; recorded in ``summary.json``); ``False`` makes that an error.
    ``allow_resolution_mismatch``: run a model on a scene whose pixel size is far from the model's training
    GSD (``imagery.inference.fitness``) with a warning instead of refusing.
    """

    scene: str = ""
    model_uri: str = ""
    out: str = ""
    dem: str | None = None
    bands: list[str] | None = None
    image_scale: str = "auto"
    tile: int = 128
    overlap: int = DEFAULT_OVERLAP
    batch_size: int = DEFAULT_BATCH
    #: CPU lanes (:mod:`imagery.inference.lanes`): 0 = one per torch thread for an eager torch path, 1 = none
    lanes: int = 0
    device: str = "auto"
    runtime: str = "auto"
    min_area_m2: float = 500.0
    threshold: float | None = None
    tta: str | None = None
    scl_mask: list[int] = field(default_factory=lambda: [0, 1, 3, 8, 9, 10, 11])
    fill_b10: bool = True
    #: skip rules (:mod:`imagery.inference.skip`): tiles all water, or flat (steepest slope below
    #: ``flat_slope_deg`` degrees, with a DEM), are not run; ``False`` (``--no-skip``) runs them
    skip: bool = True
    flat_slope_deg: float = 5.0
    allow_resolution_mismatch: bool = False
    log_rasters: bool = True
    progress: bool = True
    seed: int = 42
