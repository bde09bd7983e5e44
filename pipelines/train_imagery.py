"""``python -m pipelines.train_imagery``: train a RAU-Net (or another registry model) on L4S patches.

Without ``--data`` it trains on the built-in synthetic patches. With ``--folds k`` it runs k-fold
cross-validation: one parent MLflow run, one nested run per fold, mean and std of every test-fold
metric in the parent and ``oof_predictions.csv`` covering every patch once. Model selection and the
threshold sweep always use a validation split carved from the training patches, never the test fold.

Examples::

    python -m pipelines.train_imagery --width 8 --epochs 3              # quick synthetic run
    python -m pipelines.train_imagery --data ../L4S --epochs 65         # the seed's recipe
    python -m pipelines.train_imagery --data ../L4S --folds 5 --loss focal_iou --loss-mix 0.5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mlflow

from common.cli import add_common_args, positive_int, print_summary, run_main, unit_float
from common.seed import seed_everything
from common.tracking import setup_tracking, tracked_run
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
from imagery.training.experiment import checkpoint_run_id

EXPERIMENT = "imagery-train"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.train_imagery", description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=None,
        help="L4S folder (official/hf/plain layout) or prepare_imagery cache; default: synthetic",
    )
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
        "--folds", type=positive_int, default=1, help="k-fold cross-validation with k folds (1: a single run)"
    )
    g.add_argument("--fold", type=int, default=None, help="run only this fold (0-based) of --folds")
    g.add_argument(
        "--normalize", default="none", help="Normalizer mode for the input channels (none reproduces the seed)"
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", default=d.model.name, help="registry name (imagery.models.list_models())")
    m.add_argument("--channels", type=int, default=d.model.channel_set, help="channel set: 14, 17, 21, 23, 25 or 26")
    m.add_argument("--head", default=d.model.head, help="multires, mono or dual")
    m.add_argument("--attention", default=None, help="se, triple_mha, cbam or none (default: the model's own)")
    m.add_argument("--bottleneck", action=argparse.BooleanOptionalAction, default=None, help="use the bottleneck block")
    m.add_argument("--width", type=positive_int, default=None, help="base width F override (tiny models for tests)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--loss", default=d.loss.name, help="loss name (imagery.training.losses)")
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
    a.add_argument("--cutmix", action="store_true", help="mask-shaped copy-paste of landslides (the seed's cutmix)")
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    r.add_argument("--compile", action="store_true", help="torch.compile the model")
    r.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16")
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
    add_common_args(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig(
        model=ModelConfig(args.model, args.channels, args.head, args.attention, args.bottleneck, args.width),
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
            cutmix=args.cutmix,
        ),
        data=DataConfig(
            path=args.data,
            layout=args.layout,
            split=args.split,
            n_synthetic=args.n_synthetic,
            synthetic_size=args.synthetic_size,
            val_fraction=args.val_fraction,
            folds=args.folds,
            fold=args.fold,
            normalize=args.normalize,
        ),
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        compile=args.compile,
        precision=args.precision,
        bn_momentum=args.bn_momentum,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        tta=args.tta,
        vote=args.vote,
        n_overlays=max(0, args.overlays),
        progress=not args.no_progress,
        log_flavour=not args.no_log_flavour,
    )
    return cfg.validate()


def main(argv: Sequence[str] | None = None) -> int:
    run(argv)
    return 0


def run(argv: Sequence[str] | None = None) -> FoldsResult:
    """Parse ``argv``, train and log; returns the result (``main`` is the CLI wrapper).

    ``--resume`` continues the MLflow run (and fold runs) recorded beside the checkpoints, so their
    epoch metrics stay complete and no killed run is left behind as a separate, half-logged run.
    """
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    seed_everything(cfg.seed)
    setup_tracking(args.tracking_uri, verbose=args.verbose)
    experiment = args.experiment or EXPERIMENT
    resume_id = checkpoint_run_id(cfg.checkpoint_dir) if cfg.resume else None
    with tracked_run(experiment, cfg, run_name=args.run_name, name_hint=cfg.model.name, resume_run_id=resume_id):
        result = run_folds(cfg, experiment)
        mlflow.log_metrics(result.metrics)
    print_summary(summary(result), as_json=args.json)
    return result


def summary(result: FoldsResult) -> dict[str, object]:
    """What the command made: the run id, the segmenter URI(s) to give the next commands, key metrics."""
    keys = sorted(
        k for k in result.metrics if k.endswith("_mean") and any(m in k for m in ("ls_f1", "ls_iou", "patch_auc"))
    )
    return {"run_id": result.run_id, "model_uris": result.model_uris, "metrics": {k: result.metrics[k] for k in keys}}


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
