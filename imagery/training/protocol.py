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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common.tracking import config_to_dict, flatten_params
from imagery.inference.postprocess import ThresholdSweep
from imagery.training.choices import FOLDS_ORDERS, PROTOCOLS, SPEC_EPOCHS, FoldsOrder, Protocol  # noqa: F401 - re-exported
from imagery.training.config import TrainConfig

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
