"""``python -m pipelines.prepare_imagery``: pack L4S HDF5 patches into a memory-mapped cache.

Reads every ``image_N.h5`` / ``mask_N.h5`` of the chosen split(s) once, checks them all
(reporting every bad file together), and writes ``OUT/<split>_images.npy`` (N, 14, H, W),
``OUT/<split>_masks.npy`` (N, H, W) and ``OUT/index.json``. Training then reads ``OUT`` with
``--data OUT`` (``imagery.data.load_patches`` accepts a cache folder transparently).

Examples::

    python -m pipelines.prepare_imagery --data ../L4S --out cache/l4s --split train val
    python -m pipelines.prepare_imagery --data ../shared/data/landslide4sense_camduc --out cache/camduc
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from common.cli import RunOptions
from common.options import arg, fill, nested
from pipelines._command import Command, Context

if TYPE_CHECKING:
    from imagery.data.cache import PrepareImageryConfig

EXPERIMENT = "imagery-prepare"
#: Image dtypes of the cache (imagery.data.cache.CACHE_DTYPES, which loads h5py; tests/imagery/test_data_cache.py
#: checks they agree).
CacheDtype = Literal["float32", "float16"]


@dataclass
class PrepareImageryOptions:
    """The flags of ``python -m pipelines.prepare_imagery`` (logged as the run's ``config.json``)."""

    data: str = arg("L4S folder (official, hf or plain layout)")
    out: str = arg("cache folder to write (index.json + .npy per split)")
    split: list[str] = arg(
        "split(s) to pack: train, val, test (default train)", default_factory=lambda: ["train"], nargs="+"
    )
    layout: Literal["official", "hf", "plain"] | None = arg("force the layout", default=None)
    dtype: CacheDtype = arg("image dtype in the cache (default %(default)s)", default="float32")
    run: RunOptions = nested(RunOptions)


def library_config(o: PrepareImageryOptions, ctx: Context | None = None) -> PrepareImageryConfig:
    """The library's config for these options (what the run logs as params)."""
    from imagery.data.cache import PrepareImageryConfig  # noqa: PLC0415 - h5py loads when the command runs

    return fill(PrepareImageryConfig, o, o.run, splits=list(o.split))


def run(o: PrepareImageryOptions, ctx: Context) -> dict[str, object]:
    """Pack the patches (:func:`imagery.data.cache.prepare_cache`)."""
    from imagery.data.cache import prepare_cache  # noqa: PLC0415 - h5py loads when the command runs

    entries = ctx.result = prepare_cache(ctx.config, log=ctx.log)
    patches = {e["images"].removesuffix("_images.npy"): int(e["shape"][0]) for e in entries}
    out = Path(o.out)
    files = sorted(str(p) for p in out.iterdir() if p.is_file()) if out.is_dir() else []
    return {"cache": o.out, "patches": patches, "files": files}


COMMAND = Command(
    "prepare_imagery", PrepareImageryOptions, run, doc=__doc__, experiment=EXPERIMENT, prepare=library_config
)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
