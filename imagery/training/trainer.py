"""The RAU-Net training loop: shuffled mini-batches, augmentation, model selection, checkpoint/resume.

Data flow (one code path on CPU and CUDA):

1. Raw L4S patches ``(N, 14, H, W)`` are cleaned, turned into the model's ``C`` input channels by
   ``imagery.transforms.features.compute_features`` and normalised (``Preprocessor``), **once per run**, in
   chunks on the training device (the GPU when present). The engineered channels are per image and
   deterministic, and the seed augments *after* feature engineering (spec section 7), so computing them
   once is both faithful and the fast path. The training set stays resident on the device when it fits.
2. Every epoch the patches are shuffled with a seeded ``torch.Generator``; each batch is augmented
   on the device (``imagery.transforms.augment.augment_batch``) unless augmentation is off for that epoch.
3. Tensors are channels-last (faster on CPU and GPU). On CUDA the forward/backward runs under bf16 autocast and, with
   ``compile=True``, a ``torch.compile``d model; on CPU in fp32.
4. After every epoch the validation split (carved from the training data, never the test fold) is
   scored at p > 0.5; the epoch with the best landslide-class F1 is kept. The state is checkpointed
   atomically, so ``resume=True`` continues a killed run to the same result as an uninterrupted one.
5. After the last epoch the best weights are restored and the decision threshold is swept on the
   validation probabilities (``imagery.inference.postprocess.sweep_thresholds``).

Steps 4-5 are the protocol's (``imagery.training.protocol``, chosen once from ``cfg.protocol``: the loop calls
its hooks). Under the study protocol the split passed as ``val_*`` is the **test fold** and steps 4-5 follow the
seed study: scored at argmax after every epoch from the second and mid-epoch
after epoch 35, kept by :class:`~imagery.training.protocol.StudySelector` (2-class F1 or mIoU improved), the
threshold swept for the 2-class mean F1. ``cfg.shuffle=False`` takes the batches in the data's order every
epoch (the study's natural order). Under ``torchrun`` (``imagery.training.distributed``) each rank trains on
its shard of every global batch through DistributedDataParallel and only rank 0 validates and checkpoints.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from common.atomic import atomic_path
from common.cli import InputNotFoundError, UserError
from imagery.data.patches import IGNORE
from imagery.device import resolve_device, use_bf16
from imagery.inference.metrics import segmentation_metrics
from imagery.inference.segmenter import infer_probs
from imagery.training import distributed as ddp
from imagery.training.config import TrainConfig
from imagery.training.optim import augment_off_epochs, build_optimizer, build_scheduler
from imagery.training.protocol import StudySelector, get_protocol
from imagery.transforms.augment import DonorPool, augment_batch

CHECKPOINT_NAME = "checkpoint.pt"
MetricLogger = Callable[[dict[str, float], int], None]


# --------------------------------------------------------------------------------- results
@dataclass
class TrainResult:
    """What a finished run returns.

    ``val_probs`` ``(Nv, H, W)`` and ``val_patch_probs`` ``(Nv,)`` come from the best epoch's weights;
    ``val_metrics`` are scored at the tuned ``threshold``; ``history`` has one dict per epoch.
    Study protocol: the "validation" split is the test fold, ``val_metrics`` are scored at argmax (p > 0.5),
    ``threshold`` maximises the 2-class mean F1, ``selected_epoch`` is the number of epochs trained when the
    kept checkpoint was scored (fractional for a mid-epoch one) and ``evaluations`` lists every scoring.
    On a rank other than 0 of a ``torchrun`` job nothing is validated: the arrays are empty.
    """

    model: nn.Module
    best_epoch: int
    best_score: float
    threshold: float
    threshold_table: Any
    val_probs: np.ndarray
    val_patch_probs: np.ndarray
    val_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    selected_epoch: float = float("nan")
    evaluations: list[dict[str, float]] = field(default_factory=list)


def changed_fields(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """``"key: old -> new"`` for every key whose value differs (missing keys count as changed)."""
    return [
        f"{k}: {old.get(k, '(none)')} -> {new.get(k, '(none)')}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


# ---------------------------------------------------------------------------------- trainer
class Trainer:
    """Train ``model`` on preprocessed tensors with ``criterion``; see the module docstring.

    Args:
        cfg: the run's configuration (epochs, batch size, optimiser, schedule, augmentation, seed, ...).
        model: a network returning a dict of logits (``imagery.models`` contract).
        criterion: ``loss(outputs_dict, target (B, H, W) long) -> scalar``.
        train_x: model inputs ``(N, C, H, W)`` float32; train_y: masks ``(N, H, W)`` uint8 0/1.
        val_x, val_y: the validation split, same layout.
        device: where to train (``resolve_device(cfg.device)`` when ``None``).
        log_metrics: called as ``log_metrics(metrics, epoch)`` after every epoch (e.g. MLflow).
        resume_key: what determines the result (config fields and a data digest), stored in every
            checkpoint; ``--resume`` refuses a checkpoint whose key differs, naming what changed.
        dist: this process's place in a ``torchrun`` job (default: the initialised process group, if any).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        criterion: nn.Module | Callable[..., torch.Tensor],
        train_x: torch.Tensor,
        train_y: torch.Tensor | np.ndarray,
        val_x: torch.Tensor,
        val_y: torch.Tensor | np.ndarray,
        *,
        device: torch.device | None = None,
        log_metrics: MetricLogger | None = None,
        resume_key: dict[str, str] | None = None,
        dist: ddp.DistContext | None = None,
    ) -> None:
        if int(train_x.shape[0]) == 0:
            raise UserError("the training split is empty")
        if int(val_x.shape[0]) == 0:
            raise UserError("the validation split is empty (raise --val-fraction or give more patches)")
        self.cfg = cfg
        self.resume_key = dict(resume_key or {})
        self.device = device or resolve_device(cfg.device)
        self.bf16 = use_bf16(cfg.precision, self.device)
        self.channels_last = True  # channels-last convolutions: faster on CUDA and on CPU (oneDNN), see benchmarks/
        self.model = model.to(self.device)
        if cfg.bn_momentum is not None:
            for mod in self.model.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.momentum = cfg.bn_momentum
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.dist = dist or ddp.current()
        self.protocol = get_protocol(cfg.protocol)
        if self.dist.enabled:
            ddp.check_world(self.dist.world_size, cfg.batch_size, int(train_x.shape[0]))
            if cfg.sync_bn:
                ddp.convert_global_batchnorm(self.model)
            cuda = self.device.type == "cuda"
            ids = (
                [self.device.index if self.device.index is not None else torch.cuda.current_device()] if cuda else None
            )
            wrapped: nn.Module = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            self.forward_model: nn.Module = torch.compile(wrapped) if cfg.compile else wrapped  # type: ignore[assignment]
            self.eval_model: nn.Module = self.model  # evaluation runs on rank 0 alone: no collective calls
        else:
            self.forward_model = torch.compile(self.model) if cfg.compile else self.model  # type: ignore[assignment]
            self.eval_model = self.forward_model
        self.criterion = criterion
        self.train_x = _place(train_x, self.device)
        self.train_y = _place(torch.as_tensor(np.asarray(train_y, dtype=np.uint8)), self.train_x.device)
        self.val_x = _place(val_x, self.device)
        self.val_y = np.asarray(val_y, dtype=np.uint8)
        self.log_metrics = log_metrics
        self.steps_per_epoch = math.ceil(int(self.train_x.shape[0]) / cfg.batch_size)
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed)
        # augment_batch draws small per-sample tensors from a CPU generator and moves them to the batch's device
        self.aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
        torch.manual_seed(cfg.seed)  # dropout and initialisation-independent randomness
        self.start_epoch = 0
        self.best_score = -1.0
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] = {}
        self.history: list[dict[str, float]] = []
        self.selector = StudySelector()
        self.selected_epoch = float("nan")
        self.evaluations: list[dict[str, float]] = []
        a = cfg.augment
        study_cutmix = a.enabled and a.cutmix and a.cutmix_mode == "study"
        self.donors = DonorPool.from_training(self.train_x, self.train_y) if study_cutmix else None

    # ----------------------------------------------------------- checkpointing
    @property
    def checkpoint_path(self) -> Path | None:
        return Path(self.cfg.checkpoint_dir) / CHECKPOINT_NAME if self.cfg.checkpoint_dir else None

    def state(self, epoch_done: int) -> dict[str, Any]:
        """Everything needed to continue after ``epoch_done`` epochs (tensors and builtins only)."""
        return {
            "epoch_done": epoch_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"last_epoch": self.scheduler.last_epoch, "base_lrs": list(self.scheduler.base_lrs)},
            "shuffle_gen": self.shuffle_gen.get_state(),
            "aug_gen": self.aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "history": self.history,
            "resume_key": self.resume_key,
            "n_train": int(self.train_x.shape[0]),
            "n_val": int(self.val_x.shape[0]),
            "world_size": int(self.dist.world_size),
            "selector": self.selector.state(),
            "selected_epoch": self.selected_epoch,
            "evaluations": self.evaluations,
        }

    def save_checkpoint(self, epoch_done: int) -> None:
        """Atomically write the checkpoint (a crash mid-write leaves the previous one intact)."""
        path = self.checkpoint_path
        if path is None or not self.dist.is_main:
            return
        with atomic_path(path) as tmp:
            torch.save(self.state(epoch_done), tmp)

    def load_checkpoint(self, path: Path | None = None) -> int:
        """Restore a checkpoint written by :meth:`save_checkpoint`; returns the epochs already done."""
        path = path or self.checkpoint_path
        if path is None or not path.is_file():
            raise InputNotFoundError(
                f"--resume: no checkpoint at {path} (expected {CHECKPOINT_NAME} in --checkpoint-dir)"
            )
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
            raise UserError(
                f"--resume: {path} is not a readable training checkpoint ({exc.__class__.__name__})"
            ) from None
        changed = changed_fields(dict(ck.get("resume_key") or {}), self.resume_key)
        if changed:
            raise UserError(
                f"--resume: {path} was written by a run with different settings ({'; '.join(changed[:6])}); "
                "resume with the same settings, or start over with a new --checkpoint-dir"
            )
        if ck.get("n_train") != int(self.train_x.shape[0]) or ck.get("n_val") != int(self.val_x.shape[0]):
            raise UserError(
                f"--resume: {path} was written for {ck.get('n_train')} training / {ck.get('n_val')} validation patches,"
                f" this run has {int(self.train_x.shape[0])} / {int(self.val_x.shape[0])}"
            )
        old_world = ck.get("world_size")
        note = ddp.resume_world_note(
            None if old_world is None else int(old_world), self.dist.world_size, self.cfg.batch_size
        )
        if note and self.dist.is_main:
            print(note, file=sys.stderr, flush=True)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.last_epoch = int(ck["scheduler"]["last_epoch"])
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]  # type: ignore[attr-defined]
        self.shuffle_gen.set_state(ck["shuffle_gen"])
        self.aug_gen.set_state(ck["aug_gen"])
        torch.set_rng_state(ck["torch_rng"])
        if ck["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["cuda_rng"])
        self.best_score = float(ck["best_score"])
        self.best_epoch = int(ck["best_epoch"])
        self.best_state = ck["best_state"]
        self.history = list(ck["history"])
        if "selector" in ck:
            self.selector.load(ck["selector"])
            self.selected_epoch = float(ck["selected_epoch"])
            self.evaluations = list(ck["evaluations"])
        self.start_epoch = int(ck["epoch_done"])
        return self.start_epoch

    # ---------------------------------------------------------------- training
    def _augment(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.cfg.augment
        return augment_batch(
            xb,
            yb,
            self.aug_gen,
            rot90=a.rot90,
            flip=a.flip,
            rotate_any=a.rotate_any,
            cutmix=a.cutmix,
            cutmix_mode=a.cutmix_mode,
            donors=self.donors,
        )

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training set (shuffled, or in order with ``cfg.shuffle=False``); returns the mean
        training loss. Under the study protocol the test fold may be scored before the middle batch."""
        cfg = self.cfg
        self.model.train()
        n = int(self.train_x.shape[0])
        order = torch.randperm(n, generator=self.shuffle_gen) if cfg.shuffle else torch.arange(n)
        augment = cfg.augment.enabled and epoch < cfg.epochs - augment_off_epochs(cfg)
        mid = self.protocol.mid_epoch_batch(epoch, cfg.epochs, self.steps_per_epoch)
        total, count = 0.0, 0
        show = cfg.progress and self.dist.is_main
        bar = _progress(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", show)
        for b in range(self.steps_per_epoch):
            if b == mid:
                self.protocol.mid_epoch(self, epoch + b / self.steps_per_epoch, self.dist.is_main)
                self.model.train()
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size].to(self.train_x.device)
            xb = self.train_x.index_select(0, idx)
            yb = self.train_y.index_select(0, idx)
            if augment:
                xb, yb = self._augment(xb, yb)
            loss, n_rows = self._step(xb, yb, epoch, b)
            total += float(loss.detach()) * n_rows
            count += n_rows
            if bar is not None:
                last = self.history[-1] if self.history else {}
                last_f1 = last.get("val_ls_f1", last.get("study_test_f1_2class_mean", float("nan")))
                bar.set_postfix(loss=f"{total / count:.4f}", val_f1=f"{last_f1:.3f}")
                bar.update(1)
        if bar is not None:
            bar.close()
        return total / max(count, 1)

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int, b: int) -> tuple[torch.Tensor, int]:
        """One optimisation step on the global batch ``xb``/``yb``; returns its loss and row count. In a
        ``torchrun`` job this rank forwards its shard and the loss is taken on the gathered global batch."""
        n_rows = int(xb.shape[0])
        counts: list[int] = []
        if self.dist.enabled:
            w, r = self.dist.world_size, self.dist.rank
            counts = [hi - lo for lo, hi in (ddp.shard_bounds(n_rows, w, k) for k in range(w))]
            lo, hi = ddp.shard_bounds(n_rows, w, r)
            idle = hi == lo
            xb, yb = (xb[:1], torch.full_like(yb[:1], IGNORE)) if idle else (xb[lo:hi], yb[lo:hi])
            if self.cfg.sync_bn:
                ddp.set_local_weight(self.model, 0.0 if idle else 1.0)
        xb = xb.to(self.device, non_blocking=True)
        yb = yb.to(self.device, non_blocking=True).long()
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.forward_model(xb)
        out = {k: v.float() for k, v in out.items()}
        if self.dist.enabled:
            out, yb = ddp.gather_outputs(out, yb, counts)
        loss = self.criterion(out, yb)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch + 1}, batch {b + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss, n_rows

    def validate(self) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """Scores of the current weights on the validation split at p > 0.5, plus its probabilities."""
        probs, patch = infer_probs(
            self.eval_model,
            self.val_x,
            batch_size=self.cfg.eval_batch_size,
            device=self.device,
            bf16=self.bf16,
            channels_last=self.channels_last,
        )
        return segmentation_metrics(probs, self.val_y, 0.5), probs, patch

    def keep_weights(self) -> None:
        """Keep a CPU copy of the current weights as the selected checkpoint (restored by :meth:`finish`)."""
        self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def fit(self) -> TrainResult:
        """Train (or continue, when ``cfg.resume``) to ``cfg.epochs`` and return the best model."""
        cfg = self.cfg
        if cfg.resume:
            self.load_checkpoint()
        main = self.dist.is_main
        for epoch in range(self.start_epoch, cfg.epochs):
            lr = float(self.optimizer.param_groups[0]["lr"])
            train_loss = self.train_epoch(epoch)
            record = {"train_loss": train_loss, "lr": lr}
            score = self.protocol.end_of_epoch(self, epoch, cfg.epochs, record, main)
            self.history.append({k: v for k, v in record.items() if not k.startswith("best_")})
            if cfg.progress and main:
                _write(
                    f"epoch {epoch + 1}/{cfg.epochs}: loss {train_loss:.4f}  {self.protocol.score_label} {score:.4f}"
                    f"  (best {self.best_score:.4f} @ {self.best_epoch + 1})"
                )
            self.save_checkpoint(epoch + 1)
            if self.log_metrics is not None and main:
                self.log_metrics(record, epoch)
        return self.finish()

    def finish(self) -> TrainResult:
        """Restore the best weights and tune the threshold on the validation split (study: on the test fold,
        for the 2-class mean F1). Plain batch norm comes back after ``--sync-bn``."""
        if self.dist.enabled and self.cfg.sync_bn:
            ddp.revert_global_batchnorm(self.model)
        if self.best_state:
            self.model.load_state_dict(self.best_state)
        if not self.dist.is_main:
            empty = np.zeros((0,), dtype=np.float32)
            return TrainResult(self.model, self.best_epoch, self.best_score, 0.5, None, empty, empty, {})
        _, probs, patch = self.validate()
        threshold, table, metrics = self.protocol.final_threshold(probs, self.val_y)
        return TrainResult(
            model=self.model,
            best_epoch=self.best_epoch,
            best_score=self.best_score,
            threshold=float(threshold),
            threshold_table=table,
            val_probs=probs,
            val_patch_probs=patch,
            val_metrics=metrics,
            history=copy.deepcopy(self.history),
            selected_epoch=self.selected_epoch,
            evaluations=copy.deepcopy(self.evaluations),
        )


def _place(x: torch.Tensor, device: torch.device, headroom: float = 0.5) -> torch.Tensor:
    """Move ``x`` to ``device`` when it fits in ``headroom`` of the free GPU memory; else keep it on the CPU."""
    if device.type != "cuda":
        return x.cpu()
    if x.device.type == "cuda":
        return x
    free, _ = torch.cuda.mem_get_info(device)
    if x.numel() * x.element_size() < headroom * free:
        return x.to(device)
    return x.pin_memory()


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _write(msg: str) -> None:
    tqdm.write(msg)


__all__ = ["CHECKPOINT_NAME", "TrainResult", "Trainer"]
