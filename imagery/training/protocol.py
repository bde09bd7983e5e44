"""The two training protocols of ``train_imagery --protocol``: ``honest`` (default) and the seed study's.

``honest`` (the project's): k folds (shuffled, or ``--folds-order natural``: the study's blocks), a
validation split carved from each fold's training part selects the epoch and the threshold (landslide-class
F1), and the test fold is scored once, at the end. Its numbers are the project's: ``test_ls_f1``,
``test_ls_iou``.

``study`` reproduces how the seed study ran (``../shared/design/rau-net.md`` sections 7-11; the authors'
``train.py``, ``test.py`` and ``data_generator.py``):

* **Folds.** The patch files in natural order (``imagery.data.splits.natural_order``), 5 contiguous blocks of
  20 %: fold K (1-based, ``--fold K``) tests on ``[int((5-K)/5 N), int((6-K)/5 N))``, so fold 1 is the
  **last** block (3,039 train / 760 test of 3,799). Training uses the whole training part (no validation split).
* **Recipe** (:data:`STUDY_RECIPE`): fp32, batch 12, 65 epochs, Adam 1e-4 with the step schedule, rotation
  p = 0.7 and the authors' CutMix (``imagery.transforms.augment.cutmix_study``), both off for the last 4 epochs,
  batches taken in the natural order every epoch (the authors did not shuffle).
* **Selection on the test fold, as the authors did** (:class:`StudySelector`): the test fold is scored at
  argmax (landslide iff p > 0.5, the 128-px output) after every epoch from the second (0-based epoch >= 1),
  and also halfway through every epoch after epoch 35 (0-based, before training batch ``int(steps / 2)``).
  A checkpoint is kept whenever the 2-class mean F1 **or** the 2-class mIoU beats its best so far, and both
  bests then become the current values (so a later, worse-on-one-score checkpoint can replace an earlier
  one). The threshold is then swept on the test fold (:data:`STUDY_THRESHOLDS`, best 2-class mean F1).
* **Scores** are the study's 2-class means (``imagery.inference.metrics``), named ``study_*`` and logged in
  runs tagged ``protocol = "study: selected on the test fold"`` with run kind ``imagery-study`` (the fusion
  commands refuse such runs as base models). They are optimistic by construction: never compare them with
  an honest ``test_ls_f1``.

Shorter runs (``--epochs`` < 65) scale the mid-epoch start (35) like the step schedule's boundaries; a 1-epoch
run is scored after its only epoch. :func:`study_deviations` lists every setting of a run that differs from
the study's recipe; the run logs them in the tag ``study_deviations``.

Each protocol is a strategy (:class:`HonestProtocol`, :class:`StudyProtocol`), chosen once by name with
:func:`get_protocol` (``cfg.protocol``) from :data:`PROTOCOL_REGISTRY`; the experiment and the training loop call
its hooks (folds and their numbering, run kind and tags, when and how the selection set is scored, which
checkpoint is kept, the final threshold) instead of branching on the name.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from common.tracking import config_to_dict, flatten_params
from imagery.data.patches import PatchSet
from imagery.inference.metrics import segmentation_metrics
from imagery.inference.postprocess import ThresholdSweep, sweep_thresholds
from imagery.training.choices import FOLDS_ORDERS, PROTOCOLS, SPEC_EPOCHS, FoldsOrder, Protocol  # noqa: F401 - re-exported
from imagery.training.config import TrainConfig
from imagery.training.folds import kfold_positions, natural_fold_positions

#: Run tag naming the protocol (its values below), and the run kind of a study run.
PROTOCOL_TAG = "protocol"
PROTOCOL_TAG_VALUES: dict[str, str] = {
    "honest": "honest: selected on a validation split",
    "study": "study: selected on the test fold",
}
STUDY_RUN_KIND = "imagery-study"
DEVIATIONS_TAG = "study_deviations"
#: Prefix of every metric of a study run (``study_f1_2class_mean``, ``study_threshold``, ...).
STUDY_PREFIX = "study_"

STUDY_FOLDS = 5
#: 0-based epoch from which the test fold is scored after each epoch.
STUDY_FIRST_EVAL_EPOCH = 1
#: After this 0-based epoch (scaled by epochs/65 for shorter runs) the test fold is also scored mid-epoch.
STUDY_MID_EPOCH_AFTER = 35
#: Threshold grid of the study's test-fold sweep (the deck reports 0.95 for fold 1 and 0.5/0.45/0.4/0.5 for
#: folds 2-5, a 0.05 grid).
STUDY_THRESHOLDS: np.ndarray = np.round(np.arange(0.05, 0.951, 0.05), 2)
#: The post-processing rows of the deck, scored on the study's selected checkpoint and test fold:
#: name -> (tta, vote, morphology, threshold).
STUDY_POSTPROCESSING: dict[str, tuple[str, bool, str | None, float]] = {
    "argmax": ("none", False, None, 0.5),
    "threshold_0.95": ("none", False, None, 0.95),
    "vote": ("none", True, None, 0.5),
    "morph_close": ("none", False, "close", 0.5),
    "morph_open": ("none", False, "open", 0.5),
    "tta": ("rot4", False, None, 0.5),
    "tta_threshold_0.95": ("rot4", False, None, 0.95),
}

#: The study's recipe: flattened ``TrainConfig`` field -> value (sections 7-9 of the design note).
STUDY_RECIPE: dict[str, Any] = {
    "epochs": SPEC_EPOCHS,
    "batch_size": 12,
    "precision": "fp32",
    "shuffle": False,
    "bn_momentum": None,
    "optim.optimizer": "adam",
    "optim.lr": 1e-4,
    "optim.eps": 1e-7,
    "optim.weight_decay": 0.0,
    "optim.schedule": "step",
    "augment.enabled": True,
    "augment.rot90": True,
    "augment.flip": False,
    "augment.rotate_any": False,
    "augment.cutmix": True,
    "augment.cutmix_mode": "study",
    "augment.off_last_epochs": 4,
    "data.folds": STUDY_FOLDS,
    "data.folds_order": "natural",
    "data.normalize": "none",
    "model.dropout": None,
    "model.width": None,
}


def study_deviations(cfg: TrainConfig) -> list[str]:
    """``"field=value (study: value)"`` for every setting of ``cfg`` that differs from :data:`STUDY_RECIPE`."""
    flat = flatten_params(config_to_dict(cfg))
    out = [] if cfg.data.path else ["data=synthetic (study: the L4S TrainData)"]
    for key, want in STUDY_RECIPE.items():
        have = flat.get(key)
        if have != str(want):
            out.append(f"{key}={have} (study: {want})")
    return out


def mid_epoch_after(epochs: int) -> float:
    """The 0-based epoch after which the study also scores mid-epoch (35, scaled by ``epochs/65`` when shorter)."""
    return STUDY_MID_EPOCH_AFTER * min(1.0, epochs / SPEC_EPOCHS)


def study_mid_batch(epoch: int, epochs: int, steps: int) -> int | None:
    """Batch index before which the test fold is scored mid-epoch (``int(steps / 2)``), or ``None``."""
    return int(steps / 2) if epoch > mid_epoch_after(epochs) else None


def study_scores_after(epoch: int, epochs: int) -> bool:
    """Whether the test fold is scored after 0-based ``epoch`` (from epoch 1; a 1-epoch run after its only one)."""
    return epoch >= STUDY_FIRST_EVAL_EPOCH or epochs == 1


@dataclass
class StudySelector:
    """The authors' checkpoint rule: keep when ``f1 > best_f1 or miou > best_miou``, then set both bests to the
    current scores (both start at 0). ``f1``/``miou`` are the 2-class means on the test fold at argmax."""

    best_f1: float = 0.0
    best_miou: float = 0.0

    def update(self, f1: float, miou: float) -> bool:
        """True when this evaluation's checkpoint replaces the kept one."""
        if f1 > self.best_f1 or miou > self.best_miou:
            self.best_f1, self.best_miou = float(f1), float(miou)
            return True
        return False

    def state(self) -> dict[str, float]:
        return {"best_f1": self.best_f1, "best_miou": self.best_miou}

    def load(self, state: dict[str, float]) -> None:
        self.best_f1, self.best_miou = float(state["best_f1"]), float(state["best_miou"])


def study_threshold_sweep(probs: np.ndarray, masks: np.ndarray) -> tuple[float, Any]:
    """The study's threshold: the grid value with the highest 2-class mean F1 on ``probs``/``masks`` (the test
    fold; the smallest on ties), and the table (``threshold``, ``f1_2class_mean``, ``miou_2class``, ``ls_f1``,
    ``ls_iou``, ``bg_f1``, ``bg_iou``). Pixels equal to ``IGNORE`` are left out."""
    sweep = ThresholdSweep(STUDY_THRESHOLDS)
    sweep.update(probs, masks)
    table = sweep.table()
    total = int(sweep.pos.sum() + sweep.neg.sum())
    tp, fp, fn = (table[c].to_numpy() for c in ("tp", "fp", "fn"))
    tn = total - tp - fp - fn
    den_f1, den_iou = 2 * tn + fp + fn, tn + fp + fn
    table["bg_f1"] = np.where(den_f1 == 0, 1.0, 2 * tn / np.maximum(den_f1, 1))
    table["bg_iou"] = np.where(den_iou == 0, 1.0, tn / np.maximum(den_iou, 1))
    table["f1_2class_mean"] = (table["bg_f1"] + table["ls_f1"]) / 2
    table["miou_2class"] = (table["bg_iou"] + table["ls_iou"]) / 2
    best = int(np.argmax(table["f1_2class_mean"].to_numpy()))
    return float(table["threshold"].iloc[best]), table


# ------------------------------------------------------------------------------------ the strategies
class TrainingLoop(typing.Protocol):
    """What the protocols' hooks use of the training loop (:class:`imagery.training.trainer.Trainer`)."""

    best_score: float
    best_epoch: int
    selector: StudySelector
    selected_epoch: float
    evaluations: list[dict[str, float]]

    def validate(self) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """Scores at p > 0.5 of the current weights on the selection set, its pixel and patch probabilities."""
        ...

    def keep_weights(self) -> None:
        """Keep a copy of the current weights as the selected checkpoint."""
        ...


class TrainingProtocol:
    """The decisions of one protocol; subclasses set the class attributes and override the hooks.

    ``name`` is the ``--protocol`` value, ``run_kind`` the run kind of its runs, ``score_label`` how the
    progress line names the selection score.
    """

    name: ClassVar[str]
    run_kind: ClassVar[str]
    score_label: ClassVar[str]

    # -------------------------------------------------------------- folds and tags (the experiment)
    def name_tag(self) -> dict[str, str]:
        """The run tag naming the protocol."""
        return {PROTOCOL_TAG: PROTOCOL_TAG_VALUES[self.name]}

    def tags(self, cfg: TrainConfig) -> dict[str, str]:
        """The run tags of a run of ``cfg``: :meth:`name_tag` (and, for the study, how ``cfg`` departs from its
        recipe)."""
        return self.name_tag()

    def fold_splits(self, patches: PatchSet, cfg: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
        """Positions ``(train, test)`` of each of the ``cfg.data.folds`` folds of ``patches``."""
        raise NotImplementedError

    def fold_index(self, fold: int) -> int:
        """The 0-based fold of the ``--fold`` value ``fold``."""
        return fold

    def fold_label(self, index: int) -> int:
        """The fold number runs, tags and checkpoint folders show for the 0-based ``index``."""
        return index

    # -------------------------------------------------------------- validation and selection (the loop)
    def mid_epoch_batch(self, epoch: int, epochs: int, steps: int) -> int | None:
        """Batch index of 0-based ``epoch`` before which the selection set is scored, or ``None``."""
        return None

    def mid_epoch(self, loop: TrainingLoop, epochs_trained: float, main: bool) -> None:
        """Score the selection set mid-epoch (only called at :meth:`mid_epoch_batch`)."""

    def end_of_epoch(self, loop: TrainingLoop, epoch: int, epochs: int, record: dict[str, float], main: bool) -> float:
        """Score the selection set after 0-based ``epoch`` (of ``epochs``), keep the checkpoint when it is
        selected, add the scores to ``record`` (``best_*`` keys are logged but left out of the history) and
        return the progress line's score. ``main``: rank 0 (the only rank that validates)."""
        raise NotImplementedError

    def final_threshold(self, probs: np.ndarray, masks: np.ndarray) -> tuple[float, Any, dict[str, float]]:
        """The decision threshold swept on the selection set's ``probs`` ``(N, H, W)``, the sweep table and the
        selection set's metrics reported with the result."""
        raise NotImplementedError


class HonestProtocol(TrainingProtocol):
    """The project's protocol: selection (epoch and threshold, landslide-class F1) on a validation split."""

    name = "honest"
    run_kind = "imagery"
    score_label = "val ls_f1"

    def fold_splits(self, patches: PatchSet, cfg: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
        if cfg.data.folds_order == "natural":
            return natural_fold_positions(patches, cfg.data.folds)
        return kfold_positions(patches.ids, cfg.data.folds, cfg.seed)

    def end_of_epoch(self, loop: TrainingLoop, epoch: int, epochs: int, record: dict[str, float], main: bool) -> float:
        if not main:
            return float("nan")
        scores, _, _ = loop.validate()
        record.update({f"val_{k}": v for k, v in scores.items()})
        score = scores["ls_f1"]
        if score > loop.best_score:
            loop.best_score, loop.best_epoch = score, epoch
            loop.keep_weights()
        record["best_val_ls_f1"] = loop.best_score
        return score

    def final_threshold(self, probs: np.ndarray, masks: np.ndarray) -> tuple[float, Any, dict[str, float]]:
        threshold, table = sweep_thresholds(probs, masks)
        return float(threshold), table, segmentation_metrics(probs, masks, float(threshold))


class StudyProtocol(TrainingProtocol):
    """The seed study's protocol (module docstring): natural-order folds numbered from 1, selection on the
    test fold with :class:`StudySelector`, the threshold by :func:`study_threshold_sweep`."""

    name = "study"
    run_kind = STUDY_RUN_KIND
    score_label = "test (study) f1_2class_mean"

    def tags(self, cfg: TrainConfig) -> dict[str, str]:
        return {**super().tags(cfg), DEVIATIONS_TAG: "; ".join(study_deviations(cfg)) or "none"}

    def fold_splits(self, patches: PatchSet, cfg: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
        return natural_fold_positions(patches, cfg.data.folds)

    def fold_index(self, fold: int) -> int:
        return fold - 1

    def fold_label(self, index: int) -> int:
        return index + 1  # the study numbers its folds from 1 (fold 1 = the last block)

    def mid_epoch_batch(self, epoch: int, epochs: int, steps: int) -> int | None:
        return study_mid_batch(epoch, epochs, steps)

    def mid_epoch(self, loop: TrainingLoop, epochs_trained: float, main: bool) -> None:
        self.evaluate(loop, epochs_trained, main)

    def evaluate(self, loop: TrainingLoop, epochs_trained: float, main: bool) -> dict[str, float]:
        """The study's scoring of the test fold (at argmax) after ``epochs_trained`` epochs; keeps the weights
        when :class:`StudySelector` says so. Rank 0 only (other ranks return ``{}``)."""
        if not main:
            return {}
        scores, _, _ = loop.validate()
        kept = loop.selector.update(scores["f1_2class_mean"], scores["miou_2class"])
        if kept:
            loop.selected_epoch = float(epochs_trained)
            loop.best_score = scores["f1_2class_mean"]
            loop.best_epoch = math.ceil(epochs_trained) - 1
            loop.keep_weights()
        loop.evaluations.append(
            {
                "epochs_trained": float(epochs_trained),
                "f1_2class_mean": scores["f1_2class_mean"],
                "miou_2class": scores["miou_2class"],
                "ls_f1": scores["ls_f1"],
                "ls_iou": scores["ls_iou"],
                "kept": float(kept),
            }
        )
        return scores

    def end_of_epoch(self, loop: TrainingLoop, epoch: int, epochs: int, record: dict[str, float], main: bool) -> float:
        if main and study_scores_after(epoch, epochs):
            scores = self.evaluate(loop, epoch + 1.0, main)
            record.update({f"study_test_{k}": v for k, v in scores.items()})
            record["study_best_f1_2class_mean"] = loop.selector.best_f1
        return record.get("study_test_f1_2class_mean", float("nan"))

    def final_threshold(self, probs: np.ndarray, masks: np.ndarray) -> tuple[float, Any, dict[str, float]]:
        threshold, table = study_threshold_sweep(probs, masks)
        return threshold, table, segmentation_metrics(probs, masks, 0.5)


#: Every protocol by its ``--protocol`` name (the keys are :data:`PROTOCOLS`).
PROTOCOL_REGISTRY: dict[str, TrainingProtocol] = {p.name: p for p in (HonestProtocol(), StudyProtocol())}


def get_protocol(name: str) -> TrainingProtocol:
    """The protocol named ``name`` (a :data:`PROTOCOLS` value, checked by ``TrainConfig.validate``)."""
    return PROTOCOL_REGISTRY[name]
