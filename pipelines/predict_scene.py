"""``python -m pipelines.predict_scene``: a Sentinel-2 scene in, landslide probability, mask and polygons out.

``--scene`` is a folder of per-band files (``B04.tif``, ``T33TUM_20180926T100031_B04_10m.jp2``, ``red.tif``),
an unzipped ``.SAFE`` product, a multi-band GeoTIFF (with ``--bands`` naming its band order) or a STAC item
JSON. Bands are brought to the scene's finest band grid, converted to reflectance with the product's
scale/offset and then to the model's units; SCL cloud, shadow, saturated, nodata and snow pixels are
masked. The scene is processed one row of tiles at a time (bounded memory) and written to ``--out`` as
``probability.tif``, ``mask.tif`` (COGs on the scene grid), ``landslides.geojson`` (EPSG:4326),
``landslides.gpkg`` (scene CRS), ``overview.png`` and ``summary.json``, all logged to an MLflow run.

Examples::

    python -m pipelines.predict_scene --scene ../shared/data/sentinel2_l2a_cogs_29RKH --model runs:/<id> --out out/
    python -m pipelines.predict_scene --scene S2B_MSIL2A_...SAFE --dem dem.tif --model runs:/<id> --out out/
    python -m pipelines.predict_scene --scene stack.tif --bands B02,B03,B04,B08 --model runs:/<id> --out out/
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.cli import RunOptions, UserError, csv_list, positive_int
from common.options import arg, fill, nested
from imagery.data.choices import SceneScale
from imagery.inference.config import DEFAULT_OVERLAP, SceneConfig
from pipelines._command import Command, Context
from pipelines._segmenter_args import SceneSegmenterOptions

if TYPE_CHECKING:
    from imagery.inference.scene import SceneResult

EXPERIMENT = "imagery-scene"
_D = SceneConfig()


def _scl_classes(text: str) -> list[int]:
    try:
        values = [int(v) for v in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated SCL class numbers 0-11, got {text!r}") from None
    if any(not 0 <= v <= 11 for v in values):
        raise argparse.ArgumentTypeError(f"SCL classes are 0-11, got {text!r}")
    return values


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


@dataclass
class SceneTileOptions:
    """tiles and polygons"""

    tile: int = arg("tile size, px (default %(default)s)", default=_D.tile, type=positive_int)
    overlap: int = arg("tile overlap, px (default %(default)s)", default=DEFAULT_OVERLAP)
    min_area_m2: float = arg(
        "smallest landslide polygon kept, m2 (default 500: five 10 m pixels; below one pixel's area: a warning)",
        default=_D.min_area_m2,
        type=_non_negative_float,
    )
    skip: bool = arg(
        "skip tiles all water or flat (steepest slope below --flat-slope-deg); --no-skip runs every tile (default on)",
        default=True,
    )
    flat_slope_deg: float = arg(
        "with --dem: tiles whose steepest slope is below this (degrees) are not run (default %(default)s)",
        default=_D.flat_slope_deg,
        type=_non_negative_float,
    )


@dataclass
class PredictSceneOptions:
    """The flags of ``python -m pipelines.predict_scene`` (logged as the run's ``config.json``)."""

    scene: str = arg("band folder, .SAFE folder, multi-band GeoTIFF or STAC item JSON")
    out: str = arg("output folder")
    dem: str | None = arg("DEM raster in any CRS covering the scene (needed for slope/DEM models)", default=None)
    bands: list[str] | None = arg("band order of a multi-band GeoTIFF, e.g. B02,B03,B04", default=None)
    image_scale: SceneScale = arg(
        "override the product's DN scale: reflectance, dn (DN/10000), dn-offset ((DN-1000)/10000) (default auto)",
        default="auto",
    )
    scl_mask: list[int] = arg(
        "SCL classes masked as nodata (default 0,1,3,8,9,10,11: nodata, saturated, shadow, clouds, cirrus, snow)",
        default_factory=lambda: list(_D.scl_mask),
        type=_scl_classes,
    )
    fill_b10: bool = arg(
        "fill a model-needed B10 that an L2A product lacks with its L4S mean (a warning; default on)", default=True
    )
    allow_resolution_mismatch: bool = arg(
        "run even when the scene's pixel size is more than 1.5x off the model's training GSD (a warning)",
        default=False,
    )
    log_rasters: bool = arg("copy the two COGs into the MLflow run (default on)", default=True)
    progress: bool = arg("show a progress bar (default on)", default=True)
    tiles: SceneTileOptions = nested(SceneTileOptions)
    segmenter: SceneSegmenterOptions = nested(SceneSegmenterOptions)
    run: RunOptions = nested(RunOptions)


def library_config(o: PredictSceneOptions, ctx: Context) -> SceneConfig:
    """Resolve the model (``@champion`` when none is given) and build the library's config (logged as params)."""
    from pipelines._register import model_or_champion  # noqa: PLC0415 - MLflow loads when the command runs

    model = model_or_champion(o.segmenter.model, "imagery", "--model", required=True, log=ctx.log)
    return fill(
        SceneConfig,
        o,
        o.tiles,
        o.segmenter,
        o.run,
        model_uri=model,
        runtime=o.segmenter.engine.spec(),
    )


def run(o: PredictSceneOptions, ctx: Context) -> dict[str, object]:
    """Check the model is single-date and run the scene (:func:`imagery.inference.scene.run_scene`)."""
    from imagery.inference.scene import run_scene, scene_summary_line  # noqa: PLC0415 - loaded when the command runs
    from pipelines._register import segmenter_meta  # noqa: PLC0415 - MLflow loads when the command runs

    cfg: SceneConfig = ctx.config
    temporal = segmenter_meta(str(cfg.model_uri)).get("temporal")  # {} when unreadable: run_scene then says why
    if temporal:  # a time-series model needs pre/post composites, not one scene
        raise UserError(
            f"--scene {o.scene}: the model was trained on the temporal set {temporal!r}, which needs "
            "pre/post-event composites (Sen12Landslides patches), not a single-date scene"
        )
    result: SceneResult = run_scene(cfg, tracking_uri=ctx.tracking_uri, log=ctx.log)
    ctx.result = result
    files = [str(p) for p in result.paths.values() if p.exists()]
    if o.run.json:
        return {"run_id": ctx.run_id, **result.summary, "files": files}
    ctx.say(f"{scene_summary_line(result)}; run {ctx.run_id}")
    return {"run_id": ctx.run_id, "files": files}


COMMAND = Command("predict_scene", PredictSceneOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=library_config)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
