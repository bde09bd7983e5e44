"""Typed configuration of RAU-Net training, evaluation and prediction.

Every ``python -m pipelines.*_imagery`` command parses its flags into one of these dataclasses and
logs it whole to MLflow (``common.tracking.tracked_run``). Defaults reproduce the seed study
(``../shared/design/rau-net.md`` sections 7-10): RAU-Net 1, 23 channels, multi-resolution head, SE
attention, Focal+IoU loss, Adam at 1e-4 with the step schedule, batch 12, 65 epochs, rotation
augmentation switched off for the last 4 epochs, no extra normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.cli import UserError
from common.tracking import config_to_dict, flatten_params
from imagery.data.bands import canonical_bands
from imagery.device import PRECISIONS
from imagery.inference.config import TTA_MODES
from imagery.models import ATTENTIONS, HEADS, list_models
from imagery.training.choices import (
    FOLDS_ORDERS,
    OPTIMIZERS,
    PROTOCOLS,
    SCHEDULES,
    SPEC_AUGMENT_OFF_EPOCHS,
    SPEC_EPOCHS,
)
from imagery.training.losses import LOSSES, MIXTURE_LOSSES, unknown_loss_message
from imagery.transforms.augment import CUTMIX_MODES
from imagery.transforms.features import CHANNEL_SETS, channel_names, n_channels
from imagery.transforms.normalize import MODES as NORMALIZE_MODES


@dataclass
class ModelConfig:
    """Which network to build (``imagery.models.create_model``).

    ``width`` overrides the base width F (128 for RAU-Net 1, 40 for the small one); tiny widths
    (4-8) are for tests. ``channel_set`` names a channel set of
    ``imagery.transforms.features.compute_features`` (9, 14, 17, 21, 22, 23, 25 or 26: its channel count on all 14
    bands). ``bands`` (``--bands``) trains on a subset of the data's bands (canonical names, L4S order;
    ``None``: every band the data has); the set's channels that need a missing band are left out, so the
    network's ``in_channels`` is ``n_channels(channel_set, bands)``. ``dropout`` overrides the head's dropout
    (``None``: the model's own, 0.25 for RAU-Net 1); ``attention_site`` places the traditional U-Net's attention
    (``imagery.models.unet.ATTENTION_SITES``; ``None``: after each decoder level).
    """

    name: str = "rau_net1"
    channel_set: int = 23
    head: str = "multires"
    attention: str | None = None
    use_bottleneck: bool | None = None
    width: int | None = None
    bands: list[str] | None = None
    dropout: float | None = None
    attention_site: str | None = None

    def create_kwargs(self) -> dict[str, object]:
        """Keyword arguments of ``imagery.models.create_model`` (``attention``/``use_bottleneck`` ``None``:
        the model's own default, SE and no bottleneck for the RAU-Nets)."""
        in_channels = n_channels(self.channel_set, self.bands) if self.bands else self.channel_set
        kw: dict[str, object] = {"in_channels": in_channels, "num_classes": 2, "head": self.head}
        if self.attention is not None:
            kw["attention"] = self.attention
        if self.use_bottleneck is not None:
            kw["use_bottleneck"] = self.use_bottleneck
        if self.width is not None:
            kw["base_width"] = self.width
        if self.dropout is not None:
            kw["dropout"] = self.dropout
        if self.attention_site is not None:
            kw["attention_site"] = self.attention_site
        return kw


@dataclass
class LossConfig:
    """Loss name (``imagery.training.losses.LOSSES``) and, for the mixtures in ``MIXTURE_LOSSES``, the
    mixing weight ``mix`` of their first term: ``mix * Focal + (1 - mix) * IoU`` for ``focal_iou``
    (the deck's alpha; not the focal loss's per-class weights)."""

    name: str = "focal_iou"
    mix: float = 0.5

    def params(self) -> dict[str, float]:
        """Keyword arguments of ``create_loss(name, ...)``: ``mix`` for a mixture, nothing otherwise."""
        return {"mix": self.mix} if self.name in MIXTURE_LOSSES else {}


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    ``schedule="step"`` is the seed's step schedule (``STEP_BOUNDARIES`` x ``STEP_FACTORS`` times
    ``lr``), with the boundaries scaled by ``epochs / 65`` when a run is shorter than 65 epochs.
    ``"cosine"`` warms up linearly over ``warmup_epochs`` then decays to 0 by a half cosine; both
    are applied per optimisation step. ``eps`` 1e-7 is the Keras default the seed trained with.
    """

    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    eps: float = 1e-7
    schedule: str = "step"
    warmup_epochs: float = 1.0


@dataclass
class AugmentConfig:
    """Training augmentation (``imagery.transforms.augment.augment_batch``), applied to the engineered channels.

    ``off_last_epochs``: augmentation is switched off for this many final epochs (the seed: 4 of 65;
    scaled with the run length and at least 0). ``cutmix_mode``: ``study`` (the authors' CutMix: 0-2 pastes
    per patch from the landslide-positive training patches; on by default under ``--protocol study``),
    ``mask`` (one mask-shaped paste from a random batch member with probability 0.7) or ``box``
    (``imagery.transforms.augment``).
    """

    enabled: bool = True
    rot90: bool = True
    flip: bool = False
    rotate_any: bool = False
    cutmix: bool = False
    off_last_epochs: int = SPEC_AUGMENT_OFF_EPOCHS
    cutmix_mode: str = "mask"


@dataclass
class DataConfig:
    """Where the patches come from and how they are split.

    ``path=None`` means the built-in synthetic patches (``n_synthetic`` of ``synthetic_size`` px,
    written to a temporary L4S folder and read back through the same reader). ``val_fraction`` of
    the training patches (never the test fold) is held out for model selection and threshold tuning.
    ``folds`` > 1 runs k-fold cross-validation; ``fold`` selects a single fold of it: 0-based under the
    honest protocol, **1-based under** ``--protocol study`` (fold 1 = the last block, as the study numbers them).
    ``folds_order``: ``shuffled`` (seeded k-fold) or ``natural`` (the study's contiguous blocks of the
    naturally sorted file names; always so under ``--protocol study``).
    ``normalize`` is a ``imagery.transforms.normalize.Normalizer`` mode (``"none"`` reproduces the seed).
    ``temporal`` / ``sensor``: a Sen12Landslides folder's channel set (``post``, ``pre-post``, ``pre-post-diff``) and
    sensor (``s2``, ``s1``, ``s2+s1``), stored with the model (``SegmenterMeta.temporal`` / ``sensor``).
    ``kind``: ``synthetic`` or ``real``, stored with the model (``SegmenterMeta.training_data``); ``None``:
    ``synthetic`` without ``path`` (the built-in patches), else ``real``.
    """

    path: str | None = None
    layout: str | None = None
    split: str = "train"
    #: georeferenced chip folders (``imagery.data.chips``): band order of the image files, their scale, label map
    image_bands: list[str] | None = None
    image_scale: str = "auto"
    label_map: str | None = None
    tile: int = 128
    n_synthetic: int = 64
    synthetic_size: int = 128
    val_fraction: float = 0.2
    folds: int = 1
    fold: int | None = None
    normalize: str = "none"
    folds_order: str = "shuffled"
    kind: str | None = None
    #: Sen12Landslides folders (``imagery.data.sen12_temporal``): the temporal channel set and the sensor(s);
    #: ``None``: ``post`` and ``s2`` for such a folder, not applicable to other data
    temporal: str | None = None
    sensor: str | None = None


@dataclass
class TrainConfig:
    """Everything one training run (or one k-fold experiment) needs; logged whole to MLflow.

    ``protocol``: ``honest`` (validation-split selection) or ``study`` (the seed study's protocol, selection on
    the test fold; ``imagery.training.protocol``). ``shuffle``: a new seeded order of the training patches every
    epoch (False: the same natural order every epoch, as the study). ``sync_bn``: under ``torchrun`` batch norm
    uses the statistics of the whole global batch (``imagery.training.distributed``); otherwise each rank's own.
    ``study_row``: the deck row this run reproduces (``imagery.training.study_tables``), a tag only.
    ``postprocessing_rows``: an honest run also scores the deck's post-processing rows on its test folds
    (``test_pp_<row>_*``; a study run always does, on its selection checkpoint).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = SPEC_EPOCHS
    batch_size: int = 12
    eval_batch_size: int = 32
    seed: int = 42
    device: str = "auto"
    compile: bool = False
    precision: str = "auto"
    #: Override the BatchNorm momentum (PyTorch convention) of every BN layer; ``None`` keeps the model's
    #: Keras-faithful 0.01, whose running statistics need hundreds of steps to settle (short runs: 0.1).
    bn_momentum: float | None = None
    checkpoint_dir: str | None = None
    resume: bool = False
    tta: str = "none"
    vote: bool = False
    n_overlays: int = 4
    progress: bool = True
    #: also log the MLflow PyTorch flavour (for pyfunc users; this project loads the state dict). Slow on
    #: a CPU (it traces the model), so it can be switched off; the segmenter artifacts are always logged.
    log_flavour: bool = True
    protocol: str = "honest"
    shuffle: bool = True
    sync_bn: bool = False
    study_row: str | None = None
    postprocessing_rows: bool = False

    #: Fields that never change what a run computes: they may differ when a run is resumed.
    VOLATILE_FIELDS = (
        "device",
        "compile",
        "progress",
        "checkpoint_dir",
        "resume",
        "eval_batch_size",
        "n_overlays",
        "log_flavour",
        "study_row",
        "postprocessing_rows",
    )

    def resume_key(self) -> dict[str, str]:
        """Every setting that determines the result, flattened (``model.name``, ``optim.lr``, ...)."""
        flat = flatten_params(config_to_dict(self))
        return {k: v for k, v in flat.items() if k.split(".")[0] not in self.VOLATILE_FIELDS}

    def validate(self) -> TrainConfig:
        """Raise :class:`common.cli.UserError` naming the first bad field; return ``self`` when all are valid."""
        _choice("--model", self.model.name, tuple(list_models()))
        _choice("--optimizer", self.optim.optimizer, OPTIMIZERS)
        _choice("--schedule", self.optim.schedule, SCHEDULES)
        _choice("--head", self.model.head, HEADS)
        if self.model.attention is not None:
            _choice("--attention", self.model.attention, ATTENTIONS)
        if self.loss.name not in LOSSES:
            raise UserError(f"--{unknown_loss_message(self.loss.name)}")
        _choice("--channels", str(self.model.channel_set), tuple(str(c) for c in CHANNEL_SETS))
        _choice("--normalize", self.data.normalize, NORMALIZE_MODES)
        _choice("--tta", self.tta, TTA_MODES)
        _choice("--precision", self.precision, PRECISIONS)
        _choice("--protocol", self.protocol, PROTOCOLS)
        _choice("--folds-order", self.data.folds_order, FOLDS_ORDERS)
        _choice("--cutmix-mode", self.augment.cutmix_mode, CUTMIX_MODES)
        if self.model.dropout is not None and not 0.0 <= self.model.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1), got {self.model.dropout}")
        if self.epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.optim.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.optim.lr}")
        if not 0.0 <= self.loss.mix <= 1.0:
            raise UserError(f"--loss-mix must be in [0, 1], got {self.loss.mix}")
        if not 0.0 < self.data.val_fraction < 1.0:
            raise UserError(f"--val-fraction must be in (0, 1), got {self.data.val_fraction}")
        if self.data.folds < 1:
            raise UserError(f"--folds must be >= 1, got {self.data.folds}")
        if self.protocol == "study":
            if self.data.folds < 2:
                raise UserError(f"--protocol study runs contiguous folds: --folds must be >= 2, got {self.data.folds}")
            if self.data.folds_order != "natural":
                raise UserError(
                    "--protocol study cuts its folds from the natural order of the file names: "
                    f"--folds-order must be natural, got {self.data.folds_order!r}"
                )
            if self.data.fold is not None and not 1 <= self.data.fold <= self.data.folds:
                raise UserError(
                    f"--fold must be in 1..{self.data.folds} under --protocol study (fold 1 = the last "
                    f"{100 // self.data.folds} % block), got {self.data.fold}"
                )
        else:
            if self.data.fold is not None and self.data.folds < 2:
                raise UserError("--fold needs --folds >= 2")
            if self.data.fold is not None and not 0 <= self.data.fold < self.data.folds:
                raise UserError(
                    f"--fold must be in [0, {self.data.folds - 1}] for --folds {self.data.folds} "
                    f"(0-based; --protocol study numbers folds from 1), got {self.data.fold}"
                )
        if self.model.bands is not None:
            self.model.bands = list(canonical_bands(self.model.bands))
            channel_names(self.model.channel_set, self.model.bands)
        if self.data.tile < 16 or self.data.tile % 16:
            raise UserError(f"--tile must be a multiple of 16 (the network halves it 4 times), got {self.data.tile}")
        if self.model.width is not None and self.model.width < 1:
            raise UserError(f"--width must be >= 1, got {self.model.width}")
        if self.resume and not self.checkpoint_dir:
            raise UserError("--resume needs --checkpoint-dir (the folder holding the checkpoint to continue)")
        return self


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")
