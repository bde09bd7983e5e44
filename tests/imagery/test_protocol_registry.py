"""The protocol strategies (``imagery.training.protocol``): one per ``--protocol`` choice, and the decisions the
training loop and ``run_folds`` take from them (fold numbering, tags, selection, threshold)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from imagery.training.choices import PROTOCOLS
from imagery.training.config import TrainConfig
from imagery.training.protocol import (
    DEVIATIONS_TAG,
    PROTOCOL_REGISTRY,
    PROTOCOL_TAG,
    STUDY_RUN_KIND,
    StudySelector,
    get_protocol,
)


@dataclass
class FakeLoop:
    """A training loop whose selection set scores are set by the test."""

    scores: dict[str, float]
    best_score: float = -1.0
    best_epoch: int = -1
    selector: StudySelector = field(default_factory=StudySelector)
    selected_epoch: float = float("nan")
    evaluations: list[dict[str, float]] = field(default_factory=list)
    kept: int = 0

    def validate(self) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        return dict(self.scores), np.zeros((0,)), np.zeros((0,))

    def keep_weights(self) -> None:
        self.kept += 1


def _scores(ls_f1: float, f1_2: float, miou: float) -> dict[str, float]:
    return {"ls_f1": ls_f1, "ls_iou": ls_f1 / 2, "f1_2class_mean": f1_2, "miou_2class": miou}


def test_one_strategy_per_protocol_choice() -> None:
    assert sorted(PROTOCOL_REGISTRY) == sorted(PROTOCOLS)
    assert all(get_protocol(name).name == name for name in PROTOCOLS)


def test_fold_numbering_and_tags() -> None:
    honest, study = get_protocol("honest"), get_protocol("study")
    assert (honest.fold_index(2), honest.fold_label(2)) == (2, 2)
    assert (study.fold_index(1), study.fold_label(0)) == (0, 1)  # the study's fold 1 is index 0
    assert honest.run_kind == "imagery" and study.run_kind == STUDY_RUN_KIND
    cfg = TrainConfig()
    assert set(honest.tags(cfg)) == {PROTOCOL_TAG}
    assert set(study.tags(cfg)) == {PROTOCOL_TAG, DEVIATIONS_TAG}


def test_honest_keeps_the_best_validation_f1_only_on_rank_0() -> None:
    honest = get_protocol("honest")
    loop = FakeLoop(_scores(0.4, 0.6, 0.5))
    record: dict[str, float] = {}
    assert honest.end_of_epoch(loop, 0, 3, record, main=True) == 0.4
    assert (loop.best_epoch, loop.kept, record["best_val_ls_f1"], record["val_ls_f1"]) == (0, 1, 0.4, 0.4)
    loop.scores = _scores(0.3, 0.9, 0.9)
    honest.end_of_epoch(loop, 1, 3, {}, main=True)
    assert (loop.best_epoch, loop.kept) == (0, 1)
    assert np.isnan(honest.end_of_epoch(loop, 2, 3, {}, main=False)) and loop.kept == 1
    assert honest.mid_epoch_batch(60, 65, 10) is None


def test_study_scores_from_the_second_epoch_and_keeps_on_either_score() -> None:
    study = get_protocol("study")
    loop = FakeLoop(_scores(0.1, 0.6, 0.5))
    assert np.isnan(study.end_of_epoch(loop, 0, 65, {}, main=True)) and loop.evaluations == []
    record: dict[str, float] = {}
    assert study.end_of_epoch(loop, 1, 65, record, main=True) == 0.6
    assert (loop.best_epoch, loop.selected_epoch, loop.kept) == (1, 2.0, 1)
    assert record["study_best_f1_2class_mean"] == 0.6
    loop.scores = _scores(0.1, 0.5, 0.7)  # mIoU improves alone: kept
    study.mid_epoch(loop, 2.5, main=True)
    assert (loop.best_epoch, loop.selected_epoch, loop.kept) == (2, 2.5, 2)
    assert study.mid_epoch_batch(60, 65, 10) == 5 and study.mid_epoch_batch(10, 65, 10) is None
