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

import argparse
import sys
from collections.abc import Sequence

import mlflow

from common.cli import (
    UserError,
    add_common_args,
    csv_list,
    positive_int,
    print_summary,
    progress_printer,
    run_main,
    unit_float,
)
from common.seed import seed_everything
from common.tracking import setup_tracking, tracked_run
from imagery.data.chips import IMAGE_SCALES
from imagery.data.sen12_temporal import SENSORS, TEMPORAL_SETS
from imagery.training import (
    AugmentConfig,
    DataConfig,
    FoldsResult,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    run_folds,
)
from imagery.training import distributed as ddp
from imagery.training.experiment import checkpoint_run_id
from imagery.training.protocol import PROTOCOL_TAG_VALUES, PROTOCOLS, STUDY_FOLDS
from imagery.training.study_tables import check_row
from pipelines._register import add_register_args, imagery_extra, register_trained

#: Defaults that differ between the protocols (a flag given on the command line always wins).
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
        "folds": STUDY_FOLDS,
        "folds_order": "natural",
        "cutmix": True,
        "cutmix_mode": "study",
        "shuffle": False,
        "precision": "fp32",
    },
}

EXPERIMENT = "imagery-train"
DIST_BACKENDS = ("gloo", "nccl")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.train_imagery", description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=None,
        help="L4S folder (official/hf/plain layout), prepare_imagery cache, or a folder of georeferenced "
        "image/label GeoTIFF chips (images/ + labels/ or masks/); default: synthetic",
    )
    g.add_argument(
        "--image-bands",
        type=csv_list,
        default=None,
        help="chips: band order of the image files, e.g. B04,B03,B02,B08 (aliases ok; '-' skips a band)",
    )
    g.add_argument(
        "--image-scale",
        default="auto",
        choices=IMAGE_SCALES,
        help="chips: reflectance, dn (DN/10000), dn-offset ((DN-1000)/10000), l4s, auto (default)",
    )
    g.add_argument("--label-map", default=None, help="chips: raw label -> 0/1/ignore, e.g. 0:ignore,1:0,2:1")
    g.add_argument(
        "--temporal",
        default=None,
        choices=TEMPORAL_SETS,
        help="Sen12Landslides folder (*_s2_*.nc): post (post-event clear median; default), pre-post (both composites), "
        "pre-post-diff (both, their differences and dNDVI); stored with the model",
    )
    g.add_argument(
        "--sensor",
        default=None,
        choices=SENSORS,
        help="Sen12Landslides folder: s2 (default), s1 (VV/VH dB medians, log-ratio) or s2+s1; stored with the model",
    )
    g.add_argument("--tile", type=positive_int, default=128, help="chips: the model's tile, px (default 128)")
    g.add_argument("--layout", default=None, help="force the layout: official, hf, plain or cache")
    g.add_argument("--split", default="train", help="split of --data to train on (default train)")
    g.add_argument(
        "--n-synthetic", type=positive_int, default=d.data.n_synthetic, help="synthetic patches without --data"
    )
    g.add_argument(
        "--synthetic-size", type=positive_int, default=d.data.synthetic_size, help="synthetic patch side (px)"
    )
    g.add_argument(
        "--val-fraction", type=float, default=d.data.val_fraction, help="validation share of the training patches"
    )
    g.add_argument(
        "--protocol",
        default="honest",
        help="honest (default: validation-split selection) or study (the seed study's protocol: selection on the "
        "test fold, study_* metrics)",
    )
    g.add_argument(
        "--folds",
        type=positive_int,
        default=None,
        help="k-fold cross-validation with k folds (1: a single run; default 1, 5 under --protocol study)",
    )
    g.add_argument(
        "--fold",
        type=int,
        default=None,
        help="run only this fold of --folds: 0-based, or 1..k under --protocol study (fold 1 = the last block)",
    )
    g.add_argument(
        "--folds-order",
        default=None,
        help="shuffled (seeded k-fold; honest default) or natural (contiguous blocks of the naturally sorted file "
        "names, the study's folds)",
    )
    g.add_argument(
        "--normalize", default="none", help="Normalizer mode for the input channels (none reproduces the seed)"
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", default=d.model.name, help="registry name (imagery.models.list_models())")
    m.add_argument(
        "--channels", type=int, default=d.model.channel_set, help="channel set: 9, 14, 17, 21, 22, 23, 25 or 26"
    )
    m.add_argument(
        "--bands",
        type=csv_list,
        default=None,
        help="train on these bands only, e.g. B2,B3,B4,B8,B11,B12 (default: all bands of the data; channels "
        "needing a missing band are left out)",
    )
    m.add_argument("--head", default=d.model.head, help="multires, mono or dual")
    m.add_argument("--attention", default=None, help="se, triple_mha, cbam or none (default: the model's own)")
    m.add_argument("--bottleneck", action=argparse.BooleanOptionalAction, default=None, help="use the bottleneck block")
    m.add_argument("--width", type=positive_int, default=None, help="base width F override (tiny models for tests)")
    m.add_argument("--dropout", type=float, default=None, help="head dropout override (default: the model's own)")
    m.add_argument(
        "--attention-site",
        default=None,
        help="attention placement: unet: decoder (default), encoder, bottleneck, skip, decoder_concat (join with +); "
        "RAU-Nets: block or decoder_concat",
    )
    o = p.add_argument_group("optimisation")
    o.add_argument(
        "--loss",
        default=d.loss.name,
        help="loss name: the deck's (authors' formulas) ce, focal, iou, focal_iou, log_cosh, tversky, lovasz, "
        "boundary, center; the literature's dice, log_cosh_dice, tversky_landslide, lovasz_softmax, "
        "boundary_weighted, center_weighted; ce_iou, focal_iou_center",
    )
    o.add_argument(
        "--loss-mix",
        "--alpha",
        dest="loss_mix",
        type=unit_float,
        default=d.loss.mix,
        help="mixing weight of the mixture losses: mix*Focal + (1-mix)*IoU for focal_iou (the deck's alpha)",
    )
    o.add_argument("--optimizer", default=d.optim.optimizer, help="sgd, adagrad, rmsprop, adam, adamw or nadam")
    o.add_argument("--lr", type=float, default=d.optim.lr, help="base learning rate")
    o.add_argument("--weight-decay", type=float, default=0.0)
    o.add_argument(
        "--schedule",
        default=d.optim.schedule,
        help="step (the seed's; boundaries scaled by epochs/65 when shorter), cosine (warm-up) or constant",
    )
    o.add_argument("--warmup-epochs", type=float, default=d.optim.warmup_epochs)
    o.add_argument("--epochs", type=positive_int, default=d.epochs)
    o.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    a = p.add_argument_group("augmentation")
    a.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    a.add_argument("--no-rot90", action="store_true", help="no 90-degree rotations")
    a.add_argument("--flip", action="store_true", help="random flips")
    a.add_argument("--rotate-any", action="store_true", help="arbitrary-angle rotations")
    a.add_argument(
        "--cutmix",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="copy-paste landslides (default: off; on under --protocol study)",
    )
    a.add_argument(
        "--cutmix-mode",
        default=None,
        help="study (the authors': 0-2 pastes from landslide-positive training patches; study default), mask "
        "(one paste from a batch member with p 0.7; honest default) or box",
    )
    a.add_argument(
        "--shuffle",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="new seeded order every epoch (default on; off under --protocol study: batches in file order)",
    )
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    r.add_argument("--compile", action="store_true", help="torch.compile the model")
    r.add_argument(
        "--precision",
        default=None,
        help="auto (bf16 on CUDA, fp32 on CPU; the honest default), fp32 (the study's) or bf16",
    )
    r.add_argument(
        "--sync-bn",
        action="store_true",
        help="torchrun: batch norm with the statistics of the whole global batch (default: each rank's shard)",
    )
    r.add_argument("--dist-backend", default=None, help="torchrun: gloo or nccl (default: nccl on CUDA, else gloo)")
    r.add_argument(
        "--postprocessing-rows",
        action="store_true",
        help="honest runs: also score the deck's post-processing rows on the test folds (test_pp_* metrics)",
    )
    r.add_argument(
        "--study-row",
        default=None,
        help="the deck row this run reproduces, table/row (python -m pipelines.study_tables --plan lists them)",
    )
    r.add_argument(
        "--bn-momentum",
        type=float,
        default=None,
        help="BatchNorm momentum override (default: the model's Keras-faithful 0.01; 0.1 for short runs)",
    )
    r.add_argument("--checkpoint-dir", default=None, help="checkpoint every epoch here (atomically)")
    r.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    r.add_argument(
        "--tta", default="none", help="TTA stored with the model and used on test folds: none, rot4, rot4flip"
    )
    r.add_argument("--vote", action="store_true", help="vote over the multi-resolution outputs at evaluation")
    r.add_argument("--overlays", type=int, default=4, help="prediction overlay PNGs logged for validation patches")
    r.add_argument(
        "--no-log-flavour",
        action="store_true",
        help="skip the MLflow PyTorch flavour export (slow on a CPU); the segmenter itself is always logged",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_register_args(p, "imagery")
    add_common_args(p)
    return p


def _protocol_default(args: argparse.Namespace, name: str) -> object:
    """The flag's value, or the default of the chosen protocol when it was not given."""
    value = getattr(args, name)
    return PROTOCOL_DEFAULTS[args.protocol][name] if value is None else value


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.protocol not in PROTOCOLS:
        raise UserError(f"--protocol must be one of {', '.join(PROTOCOLS)}; got {args.protocol!r}")
    if args.dist_backend not in (None, *DIST_BACKENDS):
        raise UserError(f"--dist-backend must be one of {', '.join(DIST_BACKENDS)}; got {args.dist_backend!r}")
    if args.study_row is not None:
        check_row(args.study_row)
    cfg = TrainConfig(
        model=ModelConfig(
            args.model,
            args.channels,
            args.head,
            args.attention,
            args.bottleneck,
            args.width,
            bands=args.bands,
            dropout=args.dropout,
            attention_site=args.attention_site,
        ),
        loss=LossConfig(args.loss, args.loss_mix),
        optim=OptimConfig(
            optimizer=args.optimizer,
            lr=args.lr,
            weight_decay=args.weight_decay,
            schedule=args.schedule,
            warmup_epochs=args.warmup_epochs,
        ),
        augment=AugmentConfig(
            enabled=not args.no_augment,
            rot90=not args.no_rot90,
            flip=args.flip,
            rotate_any=args.rotate_any,
            cutmix=bool(_protocol_default(args, "cutmix")),
            cutmix_mode=str(_protocol_default(args, "cutmix_mode")),
        ),
        data=DataConfig(
            path=args.data,
            layout=args.layout,
            split=args.split,
            n_synthetic=args.n_synthetic,
            synthetic_size=args.synthetic_size,
            val_fraction=args.val_fraction,
            folds=int(_protocol_default(args, "folds")),  # type: ignore[call-overload]
            fold=args.fold,
            normalize=args.normalize,
            folds_order=str(_protocol_default(args, "folds_order")),
            image_bands=args.image_bands,
            image_scale=args.image_scale,
            label_map=args.label_map,
            tile=args.tile,
            temporal=args.temporal,
            sensor=args.sensor,
        ),
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        compile=args.compile,
        precision=str(_protocol_default(args, "precision")),
        bn_momentum=args.bn_momentum,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        tta=args.tta,
        vote=args.vote,
        n_overlays=max(0, args.overlays),
        progress=not args.no_progress,
        log_flavour=not args.no_log_flavour,
        protocol=args.protocol,
        shuffle=bool(_protocol_default(args, "shuffle")),
        sync_bn=args.sync_bn,
        study_row=args.study_row,
        postprocessing_rows=args.postprocessing_rows,
    )
    return cfg.validate()


def main(argv: Sequence[str] | None = None) -> int:
    run(argv)
    return 0


def run(argv: Sequence[str] | None = None) -> FoldsResult:
    """Parse ``argv``, train and log; returns the result (``main`` is the CLI wrapper).

    ``--resume`` continues the MLflow run (and fold runs) recorded beside the checkpoints, so their
    epoch metrics stay complete and no killed run is left behind as a separate, half-logged run.
    Under ``torchrun`` only rank 0 opens MLflow runs and prints the summary; the other ranks train.
    """
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    ctx = ddp.init_distributed(args.dist_backend)
    try:
        if ctx.enabled and ctx.world_size > cfg.batch_size:
            ddp.check_world(ctx.world_size, cfg.batch_size, ctx.world_size)
        if cfg.sync_bn and not ctx.enabled:
            raise UserError("--sync-bn applies under torchrun (--nproc-per-node >= 2); a single process has one batch")
        seed_everything(cfg.seed)
        if not ctx.is_main:
            return run_folds(cfg, args.experiment or EXPERIMENT)
        setup_tracking(args.tracking_uri, verbose=args.verbose)
        experiment = args.experiment or EXPERIMENT
        resume_id = checkpoint_run_id(cfg.checkpoint_dir) if cfg.resume else None
        with tracked_run(experiment, cfg, run_name=args.run_name, name_hint=cfg.model.name, resume_run_id=resume_id):
            result = run_folds(cfg, experiment)
            mlflow.log_metrics(result.metrics)
            if ctx.enabled:
                mlflow.set_tags({"ddp_world_size": str(ctx.world_size), "ddp_sync_bn": str(cfg.sync_bn)})
        out = summary(result, cfg)
        if not args.no_register and result.model_uris:
            out["registered"] = register_imagery(result, cfg, args.register_name, log=progress_printer(args.json))
        print_summary(out, as_json=args.json)
        return result
    finally:
        ddp.shutdown()


def register_imagery(result: FoldsResult, cfg: TrainConfig, name: str, log=print) -> str:
    """Register the first segmenter of ``result`` (the only one unless --folds k) with its model card."""
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


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
