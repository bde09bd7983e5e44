"""``python -m pipelines.train_imagery``: train a RAU-Net (or another registry model) on L4S patches.

Without ``--data`` it trains on the built-in synthetic patches. With ``--folds k`` it runs k-fold
cross-validation: one parent MLflow run, one nested run per fold, mean and std of every test-fold
metric in the parent and ``oof_predictions.csv`` covering every patch once. Under the default
``--protocol honest`` model selection and the threshold sweep use a validation split carved from the
training patches, never the test fold.

``--protocol study`` reproduces the seed study as it ran (``imagery.training.protocol``): natural-order
contiguous folds (``--fold K``, 1-based, fold 1 = the last 20 %), the whole training part, the authors'
CutMix, fp32, batches in file order, checkpoint and threshold selected **on the test fold**. Its metrics are
named ``study_*`` and its runs tagged ``protocol = "study: selected on the test fold"``.

Under ``torchrun --nproc-per-node N -m pipelines.train_imagery ...`` it trains with DistributedDataParallel
(``imagery.training.distributed``): ``--batch-size`` is the global batch, ``--sync-bn`` uses the global batch's
statistics in batch norm, only rank 0 logs and writes checkpoints.

Examples::

    python -m pipelines.train_imagery --width 8 --epochs 3              # quick synthetic run
    python -m pipelines.train_imagery --data ../L4S --epochs 65         # the seed's recipe
    python -m pipelines.train_imagery --data ../L4S --folds 5 --loss focal_iou --loss-mix 0.5
    python -m pipelines.train_imagery --data ../L4S --bands B2,B3,B4,B5,B6,B7,B8,B9,B11,B12   # no B10: L2A-ready
    python -m pipelines.train_imagery --data chips/ --image-bands B04,B03,B02,B08 --image-scale dn \
        --label-map 0:ignore,1:0,2:1
    python -m pipelines.train_imagery --data sen12/ --temporal pre-post-diff --sensor s2+s1   # Sen12Landslides .nc
    python -m pipelines.train_imagery --data ../L4S --protocol study --fold 1   # a deck row, as the study ran
    torchrun --nproc-per-node 4 -m pipelines.train_imagery --data ../L4S --sync-bn --folds 5
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from common.cli import RunOptions, UserError, positive_int, unit_float
from common.options import arg, fill, nested
from imagery.data.choices import ImageScale, Sensor, TemporalSet
from imagery.inference.config import TtaMode
from imagery.training.choices import SPEC_EPOCHS, FoldsOrder, Optimizer, Protocol, Schedule
from pipelines._command import Command, Context
from pipelines._register import RegisterImageryOptions, imagery_extra, register_trained

if TYPE_CHECKING:
    from imagery.training import FoldsResult, TrainConfig

EXPERIMENT = "imagery-train"
#: The choices of --cutmix-mode and --precision, implemented in modules that import torch
#: (imagery.transforms.augment.CutmixMode, imagery.device.Precision; tests/imagery/test_train.py checks they agree).
CutmixMode = Literal["study", "mask", "box"]
TrainPrecision = Literal["auto", "fp32", "bf16"]

#: Defaults that differ between the protocols (a flag given on the command line always wins); ``folds`` under
#: the study protocol is ``imagery.training.protocol.STUDY_FOLDS`` (5).
PROTOCOL_DEFAULTS: dict[str, dict[str, object]] = {
    "honest": {
        "folds": 1,
        "folds_order": "shuffled",
        "cutmix": False,
        "cutmix_mode": "mask",
        "shuffle": True,
        "precision": "auto",
    },
    "study": {
        "folds": 5,
        "folds_order": "natural",
        "cutmix": True,
        "cutmix_mode": "study",
        "shuffle": False,
        "precision": "fp32",
    },
}


@dataclass
class DataOptions:
    """data"""

    data: str | None = arg(
        "L4S folder (official/hf/plain layout), prepare_imagery cache, or a folder of georeferenced "
        "image/label GeoTIFF chips (images/ + labels/ or masks/); default: synthetic",
        default=None,
    )
    image_bands: list[str] | None = arg(
        "chips: band order of the image files, e.g. B04,B03,B02,B08 (aliases ok; '-' skips a band)", default=None
    )
    image_scale: ImageScale = arg(
        "chips: reflectance, dn (DN/10000), dn-offset ((DN-1000)/10000), l4s, auto (default)", default="auto"
    )
    label_map: str | None = arg("chips: raw label -> 0/1/ignore, e.g. 0:ignore,1:0,2:1", default=None)
    temporal: TemporalSet | None = arg(
        "Sen12Landslides folder (*_s2_*.nc): post (post-event clear median; default), pre-post (both composites), "
        "pre-post-diff (both, their differences and dNDVI); stored with the model",
        default=None,
    )
    sensor: Sensor | None = arg(
        "Sen12Landslides folder: s2 (default), s1 (VV/VH dB medians, log-ratio) or s2+s1; stored with the model",
        default=None,
    )
    tile: int = arg("chips: the model's tile, px (default 128)", default=128, type=positive_int)
    layout: str | None = arg("force the layout: official, hf, plain or cache", default=None)
    split: str = arg("split of --data to train on (default train)", default="train")
    n_synthetic: int = arg("synthetic patches without --data", default=64, type=positive_int)
    synthetic_size: int = arg("synthetic patch side (px)", default=128, type=positive_int)
    val_fraction: float = arg("validation share of the training patches", default=0.2)
    protocol: Protocol = arg(
        "honest (default: validation-split selection) or study (the seed study's protocol: selection on the "
        "test fold, study_* metrics)",
        default="honest",
    )
    folds: int | None = arg(
        "k-fold cross-validation with k folds (1: a single run; default 1, 5 under --protocol study)",
        default=None,
        type=positive_int,
    )
    fold: int | None = arg(
        "run only this fold of --folds: 0-based, or 1..k under --protocol study (fold 1 = the last block)",
        default=None,
    )
    folds_order: FoldsOrder | None = arg(
        "shuffled (seeded k-fold; honest default) or natural (contiguous blocks of the naturally sorted file "
        "names, the study's folds)",
        default=None,
    )
    normalize: str = arg("Normalizer mode for the input channels (none reproduces the seed)", default="none")


@dataclass
class ModelOptions:
    """model"""

    model: str = arg("registry name (imagery.models.list_models())", default="rau_net1")
    channels: int = arg("channel set: 9, 14, 17, 21, 22, 23, 25 or 26", default=23)
    bands: list[str] | None = arg(
        "train on these bands only, e.g. B2,B3,B4,B8,B11,B12 (default: all bands of the data; channels "
        "needing a missing band are left out)",
        default=None,
    )
    head: str = arg("multires, mono or dual", default="multires")
    attention: str | None = arg("se, triple_mha, cbam or none (default: the model's own)", default=None)
    bottleneck: bool | None = arg("use the bottleneck block (default: the model's own)", default=None)
    width: int | None = arg("base width F override (tiny models for tests)", default=None, type=positive_int)
    dropout: float | None = arg("head dropout override (default: the model's own)", default=None)
    attention_site: str | None = arg(
        "attention placement: unet: decoder (default), encoder, bottleneck, skip, decoder_concat (join with +); "
        "RAU-Nets: block or decoder_concat",
        default=None,
    )


@dataclass
class OptimOptions:
    """optimisation"""

    loss: str = arg(
        "loss name: the deck's (authors' formulas) ce, focal, iou, focal_iou, log_cosh, tversky, lovasz, "
        "boundary, center; the literature's dice, log_cosh_dice, tversky_landslide, lovasz_softmax, "
        "boundary_weighted, center_weighted; ce_iou, focal_iou_center (default %(default)s)",
        default="focal_iou",
    )
    loss_mix: float = arg(
        "mixing weight of the mixture losses: mix*Focal + (1-mix)*IoU for focal_iou (the deck's alpha)",
        default=0.5,
        type=unit_float,
        aliases=("--alpha",),
    )
    optimizer: Optimizer = arg("optimiser (default %(default)s)", default="adam")
    lr: float = arg("base learning rate", default=1e-4)
    weight_decay: float = arg("weight decay", default=0.0)
    schedule: Schedule = arg(
        "step (the seed's; boundaries scaled by epochs/65 when shorter), cosine (warm-up) or constant", default="step"
    )
    warmup_epochs: float = arg("warm-up epochs of --schedule cosine", default=1.0)
    epochs: int = arg("training epochs", default=SPEC_EPOCHS, type=positive_int)
    batch_size: int = arg("patches per batch (under torchrun: the global batch)", default=12, type=positive_int)


@dataclass
class AugmentOptions:
    """augmentation"""

    augment: bool = arg("augmentation (default on)", default=True)
    rot90: bool = arg("90-degree rotations (default on)", default=True)
    flip: bool = arg("random flips", default=False)
    rotate_any: bool = arg("arbitrary-angle rotations", default=False)
    cutmix: bool | None = arg("copy-paste landslides (default: off; on under --protocol study)", default=None)
    cutmix_mode: CutmixMode | None = arg(
        "study (the authors': 0-2 pastes from landslide-positive training patches; study default), mask "
        "(one paste from a batch member with p 0.7; honest default) or box",
        default=None,
    )
    shuffle: bool | None = arg(
        "new seeded order every epoch (default on; off under --protocol study: batches in file order)", default=None
    )


@dataclass
class RuntimeOptions:
    """runtime"""

    device: str = arg("auto (CUDA when present), cpu or cuda[:N]", default="auto")
    compile: bool = arg("torch.compile the model", default=False)
    precision: TrainPrecision | None = arg(
        "auto (bf16 on CUDA, fp32 on CPU; the honest default), fp32 (the study's) or bf16", default=None
    )
    sync_bn: bool = arg(
        "torchrun: batch norm with the statistics of the whole global batch (default: each rank's shard)",
        default=False,
    )
    dist_backend: Literal["gloo", "nccl"] | None = arg(
        "torchrun: gloo or nccl (default: nccl on CUDA, else gloo)", default=None
    )
    postprocessing_rows: bool = arg(
        "honest runs: also score the deck's post-processing rows on the test folds (test_pp_* metrics)",
        default=False,
    )
    study_row: str | None = arg(
        "the deck row this run reproduces, table/row (python -m pipelines.study_tables --plan lists them)",
        default=None,
    )
    bn_momentum: float | None = arg(
        "BatchNorm momentum override (default: the model's Keras-faithful 0.01; 0.1 for short runs)", default=None
    )
    checkpoint_dir: str | None = arg("checkpoint every epoch here (atomically)", default=None)
    resume: bool = arg("continue from --checkpoint-dir", default=False)
    tta: TtaMode = arg("TTA stored with the model and used on test folds: none, rot4, rot4flip", default="none")
    vote: bool = arg("vote over the multi-resolution outputs at evaluation", default=False)
    overlays: int = arg("prediction overlay PNGs logged for validation patches", default=4)
    log_flavour: bool = arg(
        "export the MLflow PyTorch flavour (slow on a CPU; --no-log-flavour skips it); the segmenter itself is "
        "always logged (default on)",
        default=True,
    )
    progress: bool = arg("progress bars (default on)", default=True)


@dataclass
class TrainImageryOptions:
    """The flags of ``python -m pipelines.train_imagery`` (logged as the run's ``config.json``)."""

    data: DataOptions = nested(DataOptions)
    model: ModelOptions = nested(ModelOptions)
    optim: OptimOptions = nested(OptimOptions)
    augment: AugmentOptions = nested(AugmentOptions)
    runtime: RuntimeOptions = nested(RuntimeOptions)
    register: RegisterImageryOptions = nested(RegisterImageryOptions)
    run: RunOptions = nested(RunOptions)


def _protocol_default(o: TrainImageryOptions, value: object, name: str) -> object:
    """The flag's value, or the default of the chosen protocol when it was not given."""
    return PROTOCOL_DEFAULTS[o.data.protocol][name] if value is None else value


def library_config(o: TrainImageryOptions, ctx: Context | None = None) -> TrainConfig:
    """The library's config (validated; what the run logs as params), and the torchrun checks."""
    from imagery.training import AugmentConfig, DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig  # noqa: PLC0415 - torch loads when the command runs
    from imagery.training import distributed as ddp  # noqa: PLC0415 - torch loads when the command runs
    from imagery.training.study_tables import check_row  # noqa: PLC0415 - MLflow loads when the command runs

    if o.runtime.study_row is not None:
        check_row(o.runtime.study_row)
    d, m, a, r = o.data, o.model, o.augment, o.runtime

    def default(value: object, key: str) -> object:  # the protocol's default where the flag was not given
        return _protocol_default(o, value, key)  # type: ignore[arg-type]

    cfg = fill(
        TrainConfig,
        o.optim,
        r,
        o.run,
        model=fill(ModelConfig, m, name=m.model, channel_set=m.channels, use_bottleneck=m.bottleneck),
        loss=LossConfig(o.optim.loss, o.optim.loss_mix),
        optim=fill(OptimConfig, o.optim),
        augment=fill(
            AugmentConfig,
            a,
            enabled=a.augment,
            cutmix=bool(default(a.cutmix, "cutmix")),
            cutmix_mode=str(default(a.cutmix_mode, "cutmix_mode")),
        ),
        data=fill(
            DataConfig,
            d,
            path=d.data,
            folds=int(default(d.folds, "folds")),  # type: ignore[call-overload]
            folds_order=str(default(d.folds_order, "folds_order")),
        ),
        precision=str(default(r.precision, "precision")),
        n_overlays=max(0, r.overlays),
        protocol=d.protocol,
        shuffle=bool(default(a.shuffle, "shuffle")),
    ).validate()
    dist = ddp.env_context()
    if dist.enabled and dist.world_size > cfg.batch_size:
        ddp.check_world(dist.world_size, cfg.batch_size, dist.world_size)
    if cfg.sync_bn and not dist.enabled:
        raise UserError("--sync-bn applies under torchrun (--nproc-per-node >= 2); a single process has one batch")
    return cfg


@contextlib.contextmanager
def distributed(o: TrainImageryOptions) -> Iterator[None]:
    """torch.distributed set up for the whole command under torchrun (nothing for a single process)."""
    from imagery.training import distributed as ddp  # noqa: PLC0415 - torch loads when the command runs

    ddp.init_distributed(o.runtime.dist_backend)
    try:
        yield
    finally:
        ddp.shutdown()


def is_main_rank(o: TrainImageryOptions) -> bool:
    """Only rank 0 of a torchrun job opens MLflow runs and prints the summary; the other ranks train."""
    from imagery.training import distributed as ddp  # noqa: PLC0415 - torch loads when the command runs

    return ddp.env_context().is_main


def resume_run_id(o: TrainImageryOptions, cfg: TrainConfig) -> str | None:
    """``--resume`` continues the MLflow run (and fold runs) recorded beside the checkpoints, so their epoch
    metrics stay complete and no killed run is left behind as a separate, half-logged run."""
    from imagery.training.experiment import checkpoint_run_id  # noqa: PLC0415 - torch loads when the command runs

    return checkpoint_run_id(cfg.checkpoint_dir) if cfg.resume else None


def train(o: TrainImageryOptions, ctx: Context) -> dict[str, object] | None:
    """Train and log (:func:`imagery.training.run_folds`); the summary names the segmenter URIs."""
    import mlflow  # noqa: PLC0415 - loaded when the command runs: --help stays fast

    from imagery.training import distributed as ddp  # noqa: PLC0415 - torch loads when the command runs
    from imagery.training import run_folds  # noqa: PLC0415 - torch loads when the command runs

    cfg: TrainConfig = ctx.config
    result = ctx.result = run_folds(cfg, o.run.experiment or EXPERIMENT)
    if ctx.run is None:  # a torchrun rank other than 0: no run, no summary
        return None
    mlflow.log_metrics(result.metrics)
    dist = ddp.env_context()
    if dist.enabled:
        mlflow.set_tags({"ddp_world_size": str(dist.world_size), "ddp_sync_bn": str(cfg.sync_bn)})
    out = summary(result, cfg)
    if cfg.checkpoint_dir:
        out["files"] = [f"{cfg.checkpoint_dir}/"]
    return out


def register(o: TrainImageryOptions, ctx: Context, out: dict[str, object]) -> None:
    """After the run: register the segmenter with its card (unless --no-register)."""
    if not o.register.no_register and ctx.result.model_uris:
        out["registered"] = register_imagery(ctx.result, ctx.config, o.register.register_name, log=ctx.log)


def register_imagery(result: FoldsResult, cfg: TrainConfig, name: str, log=print) -> str:
    """Register the first segmenter of ``result`` (the only one unless --folds k) with its model card."""
    from imagery.training.protocol import PROTOCOL_TAG_VALUES  # noqa: PLC0415 - torch loads when the command runs

    model_uri = result.model_uris[0]
    synthetic = cfg.data.path is None
    data_name = cfg.data.path or f"built-in synthetic patches ({cfg.data.n_synthetic}, seed {cfg.seed})"
    n = len(result.model_uris)
    notes = [f"fold 1 of {n} (each fold's model is in its own run)"] if n > 1 else []
    return register_trained(
        "imagery",
        model_uri,
        name=name,
        card_run_id=model_uri[len("runs:/") :].split("/", 1)[0],
        data_name=data_name,
        data_kind="synthetic" if synthetic else "real",
        metrics=result.metrics,
        protocol=PROTOCOL_TAG_VALUES.get(str(cfg.protocol), str(cfg.protocol)),
        extra=imagery_extra(model_uri),
        notes=notes,
        log=log,
    )


def summary(result: FoldsResult, cfg: TrainConfig | None = None) -> dict[str, object]:
    """What the command made: the run id, the segmenter URI(s) to give the next commands, key metrics
    (under the study protocol its ``study_*`` 2-class means, with the protocol named)."""
    from imagery.training.protocol import PROTOCOL_TAG_VALUES  # noqa: PLC0415 - torch loads when the command runs

    study = cfg is not None and cfg.protocol == "study"
    wanted = ("ls_f1", "ls_iou", "patch_auc") + (("f1_2class_mean", "miou_2class", "study_threshold") if study else ())
    keys = sorted(
        k
        for k in result.metrics
        if k.endswith("_mean") and any(m in k for m in wanted) and "_pp_" not in k and "_at_threshold" not in k[:-5]
    )
    out: dict[str, object] = {"run_id": result.run_id, "model_uris": result.model_uris}
    if study:
        out["protocol"] = PROTOCOL_TAG_VALUES["study"]
    out["metrics"] = {k: result.metrics[k] for k in keys}
    return out


COMMAND = Command(
    "train_imagery",
    TrainImageryOptions,
    train,
    doc=__doc__,
    experiment=EXPERIMENT,
    prepare=library_config,
    name_hint=lambda o: o.model.model,
    resume_run_id=resume_run_id,
    tracked=is_main_rank,
    around=distributed,
    finish=register,
)
main = COMMAND.main


def run(argv: Sequence[str] | None = None) -> FoldsResult:
    """Parse ``argv``, train and log; returns the result (for scripts and tests; ``main`` is the CLI)."""
    return COMMAND.call(list(argv or []))


if __name__ == "__main__":
    COMMAND.exit()
