"""The seed study's slide-deck tables, with the deck's numbers, ours under the study protocol and ours honest.

One table per deck section (:data:`TABLES`): losses, channel sets, heads, backbones, small models, optimisers,
post-processing and the 5 folds. Each row says how to rerun it (``train_imagery`` flags beyond the study's
defaults), the deck's numbers where ``../shared/design/rau-net.md`` (or, where marked, the authors' LOG files it
cites) gives them, and which runs hold ours:

* a run made with ``--study-row <table>/<row>`` carries the tag ``study_row`` (the parent and its fold runs);
* **ours, study**: its fold run under ``--protocol study`` (tag ``protocol = "study: selected on the test
  fold"``): ``study_f1_2class_mean`` and ``study_miou_2class``, the 2-class means the deck reports, with the
  checkpoint (and for threshold rows the threshold) selected on the test fold, as the authors did;
* **ours, honest**: its fold run under ``--protocol honest --folds-order natural`` (the same block as test fold,
  0-based label ``K - 1``): ``test_ls_f1`` and ``test_ls_iou``, landslide-class scores with the epoch and
  threshold selected on a validation split. These are the project's numbers; the two are never comparable.

:func:`collect_results` reads the runs (the latest finished one per row and protocol), :func:`render_markdown`
prints every table (``not run`` where no run has the row's tag; a run that departs from the study's recipe, e.g.
a short CPU run, is marked and its deviations listed), and :func:`plan_markdown` writes the commands of every row
for one GPU with their expected times (``benchmarks/study_plan.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlflow.tracking import MlflowClient

from common.cli import UserError
from common.tracking import resolve_tracking_uri
from imagery.training.protocol import PROTOCOL_TAG, PROTOCOL_TAG_VALUES, STUDY_RECIPE

#: The train_imagery experiment the tables read by default (``pipelines.train_imagery.EXPERIMENT``).
DEFAULT_EXPERIMENT = "imagery-train"
ROW_TAG = "study_row"


@dataclass(frozen=True)
class DeckRow:
    """One deck row: ``key`` (unique in its table), the label, the ``train_imagery`` flags that make it, the deck's
    numbers (2-class mean F1 / mIoU, parameters, landslide-class F1 derived in the design note) and where they come
    from. ``run`` is the ``--study-row`` tag of the run that holds it (rows scored in one run share it), ``fold`` the
    study's (1-based) fold, ``pp`` the post-processing row of :data:`imagery.training.protocol.STUDY_POSTPROCESSING`.
    """

    key: str
    label: str
    args: tuple[str, ...] = ()
    deck_f1: float | str | None = None
    deck_miou: float | None = None
    deck_params: str | None = None
    deck_ls_f1: float | None = None
    source: str = ""
    run: str | None = None
    fold: int = 1
    pp: str | None = None


@dataclass(frozen=True)
class DeckTable:
    """A deck table: ``name`` (the ``--study-row`` prefix), title, a note and its rows."""

    name: str
    title: str
    rows: tuple[DeckRow, ...]
    note: str = ""

    def run_tag(self, row: DeckRow) -> str:
        return row.run or f"{self.name}/{row.key}"


_NOTE = "rau-net.md"
_PP = "postprocessing/all"
_FOLDS = "5-fold/all"
_UNET = ("--model", "unet", "--channels", "14", "--head", "mono", "--loss", "ce")

TABLES: tuple[DeckTable, ...] = (
    DeckTable(
        "losses",
        "Loss functions (RAU-Net 1, 23 channels, multi-resolution head, fold 1)",
        (
            DeckRow("ce", "cross-entropy", ("--loss", "ce")),
            DeckRow("focal", "focal (gamma 2)", ("--loss", "focal")),
            DeckRow("iou", "IoU (-log soft Jaccard, both classes)", ("--loss", "iou")),
            DeckRow("focal_iou", "focal + IoU (the final recipe)", ("--loss", "focal_iou")),
            DeckRow("log_cosh", "log-cosh (authors': w * log cosh((p - y)^2))", ("--loss", "log_cosh")),
            DeckRow("tversky", "Tversky (authors': -log, a = b = 0.75, both classes)", ("--loss", "tversky")),
            DeckRow("lovasz", "Lovasz (authors': sqrt errors, -log IoU increments)", ("--loss", "lovasz")),
            DeckRow("boundary", "boundary (authors' weights)", ("--loss", "boundary")),
            DeckRow("center", "center (as trained: cross-entropy halved)", ("--loss", "center")),
        ),
        "The design note gives no number of this table; the deck's model for it is not recorded there.",
    ),
    DeckTable(
        "channels",
        "Input channel sets (fold 1)",
        (
            DeckRow("9", "9: B2-B4 + min-max RGB + scaled RGB", ("--channels", "9")),
            DeckRow("14", "14: the L4S bands", ("--channels", "14")),
            DeckRow("17", "17: bands + min-max RGB", ("--channels", "17")),
            DeckRow("21", "21: Sentinel-only (23 without slope/DEM)", ("--channels", "21")),
            DeckRow("22", "22: 17 + edge + 2 blurs + 2 gradients", ("--channels", "22")),
            DeckRow("23", "23: the final set (deck: best)", ("--channels", "23")),
            DeckRow("26", "26: 23 + Canny + Sobel x/y", ("--channels", "26")),
        ),
        "Deck: 23 channels was the best set; the design note gives no per-row number.",
    ),
    DeckTable(
        "heads",
        "Segmentation heads (fold 1)",
        (
            DeckRow("multires", "multi-resolution (256/128/64, 0.25/0.5/0.25)", ("--head", "multires")),
            DeckRow("mono", "mono (128 only)", ("--head", "mono"), 0.6996, 0.6176, source=_NOTE),
            DeckRow("dual", "dual (mask + patch probability)", ("--head", "dual"), 0.6651, 0.5911, source=_NOTE),
        ),
        "Deck: the dual head scored worse than mono (design note section 3.5).",
    ),
    DeckTable(
        "backbones",
        "Backbones (fold 1)",
        (
            DeckRow(
                "unet", "traditional U-Net (14 ch, single head, CE: the deck's baseline)", _UNET, deck_params="31.4 M"
            ),
            DeckRow("unet_se", "U-Net + SE", (*_UNET, "--attention", "se"), deck_params="31.6 M (ours 31.75 M)"),
            DeckRow("unet_cbam", "U-Net + CBAM", (*_UNET, "--attention", "cbam"), deck_params="31.9 M (ours 31.75 M)"),
            DeckRow(
                "unet_proposed",
                "U-Net + proposed (triple multi-head) attention",
                (*_UNET, "--attention", "triple_mha"),
                deck_params="31.8 M (ours 32.02 M)",
            ),
            DeckRow(
                "res_unet", "residual U-Net (our convolution blocks)", ("--model", "res_unet"), deck_params="24.4 M"
            ),
            DeckRow("rau_net1", "RAU-Net 1 (final)", ("--model", "rau_net1"), deck_params="24.8 M"),
            DeckRow("rau_net2", "RAU-Net 2", ("--model", "rau_net2"), deck_params="24.8 M"),
            DeckRow("deeplabv3_mobilenetv3", "DeepLabV3 + MobileNetV3", ("--model", "deeplabv3_mobilenetv3")),
            DeckRow("deeplabv3_efficientnet", "DeepLabV3 + EfficientNet-B0", ("--model", "deeplabv3_efficientnet")),
        ),
        "Parameter counts from the deck; the U-Net attention placement is unknown (imagery/models/unet.py: none "
        "reproduces them within 0.1 M; the default, after each decoder level, is one of the closest).",
    ),
    DeckTable(
        "small",
        "Small models (fold 1)",
        (
            DeckRow("small_rau_net1", "small RAU-Net 1 (F = 40)", ("--model", "small_rau_net1"), deck_params="2.6 M"),
            DeckRow("small_res_unet", "small residual U-Net", ("--model", "small_res_unet"), deck_params="2.6 M"),
        ),
    ),
    DeckTable(
        "optimisers",
        "Optimisers (fold 1)",
        (
            DeckRow("adam", "Adam (the deck's winner)", ("--optimizer", "adam")),
            DeckRow("adagrad", "Adagrad", ("--optimizer", "adagrad")),
            DeckRow("rmsprop", "RMSprop", ("--optimizer", "rmsprop")),
            DeckRow("sgd", "SGD (momentum 0.9)", ("--optimizer", "sgd")),
            DeckRow("nadam", "Nadam", ("--optimizer", "nadam")),
            DeckRow("adamw", "AdamW", ("--optimizer", "adamw")),
        ),
        "Deck: Adam won; the design note gives no per-row number.",
    ),
    DeckTable(
        "postprocessing",
        "Post-processing (RAU-Net 1 final, fold 1; all rows from one run)",
        (
            DeckRow(
                "argmax", "none (argmax)", (), 0.7242, 0.6388, deck_ls_f1=0.458, source=_NOTE, pp="argmax", run=_PP
            ),
            DeckRow(
                "threshold_0.95",
                "threshold 0.95 (honest: the validation-tuned threshold)",
                (),
                0.7463,
                0.6597,
                deck_ls_f1=0.499,
                source=f"{_NOTE}; mIoU: LOG k1-post-processed.out",
                pp="threshold_0.95",
                run=_PP,
            ),
            DeckRow(
                "vote", "voting over the 3 resolutions", (), 0.7215, source=f"{_NOTE} (vs 0.7220)", pp="vote", run=_PP
            ),
            DeckRow(
                "morph_close",
                "closing 4x4 (the authors' default)",
                (),
                "hurts",
                source=_NOTE,
                pp="morph_close",
                run=_PP,
            ),
            DeckRow("morph_open", "opening 4x4", (), "hurts", source=_NOTE, pp="morph_open", run=_PP),
            DeckRow("tta", "multi-angle TTA (4 rotations)", (), pp="tta", run=_PP),
            DeckRow(
                "tta_threshold_0.95",
                "TTA + threshold 0.95 (honest: validation-tuned)",
                (),
                0.7344,
                source=_NOTE,
                pp="tta_threshold_0.95",
                run=_PP,
            ),
        ),
        "One run per protocol (--study-row postprocessing/all; honest runs add --postprocessing-rows).",
    ),
    DeckTable(
        "5-fold",
        "Five folds (RAU-Net 1 final; fold 1 = the last 20 % of the natural order)",
        (
            DeckRow("fold1", "fold 1", (), 0.7242, 0.6388, deck_ls_f1=0.458, source=_NOTE, fold=1, run=_FOLDS),
            DeckRow(
                "fold2",
                "fold 2 (best threshold 0.5)",
                (),
                "0.86-0.88",
                deck_ls_f1=0.74,
                source=_NOTE,
                fold=2,
                run=_FOLDS,
            ),
            DeckRow(
                "fold3",
                "fold 3 (best threshold 0.45)",
                (),
                0.8769,
                0.7998,
                deck_ls_f1=0.76,
                source="LOG k3-post-processed.out (post-processing not recorded)",
                fold=3,
                run=_FOLDS,
            ),
            DeckRow(
                "fold4",
                "fold 4 (best threshold 0.4)",
                (),
                "0.86-0.88",
                deck_ls_f1=0.75,
                source=_NOTE,
                fold=4,
                run=_FOLDS,
            ),
            DeckRow(
                "fold5",
                "fold 5 (best threshold 0.5)",
                (),
                "0.86-0.88",
                deck_ls_f1=0.73,
                source=_NOTE,
                fold=5,
                run=_FOLDS,
            ),
        ),
        "One run per protocol (--study-row 5-fold/all, all five folds).",
    ),
)


def run_tags() -> list[str]:
    """Every ``--study-row`` value (``table/row``; ``postprocessing/all`` and ``5-fold/all`` for the shared runs)."""
    seen: dict[str, None] = {}
    for t in TABLES:
        for r in t.rows:
            seen[t.run_tag(r)] = None
    return list(seen)


def check_row(name: str) -> str:
    """``name`` when it is a ``--study-row`` value; else a one-line :class:`UserError` listing them."""
    tags = run_tags()
    if name not in tags:
        raise UserError(f"--study-row {name!r}: expected one of {', '.join(tags)}")
    return name


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class RowResult:
    """Our numbers of one row under one protocol: the fold run's id, its two scores and the study deviations."""

    run_id: str
    scores: tuple[float, float]
    deviations: str = ""


@dataclass
class TableResults:
    """``(table, row key, protocol) -> RowResult`` for every row with a finished run."""

    found: dict[tuple[str, str, str], RowResult] = field(default_factory=dict)
    experiment: str = DEFAULT_EXPERIMENT


#: Recipe fields the honest protocol sets its own way (not deviations of an honest run).
_PROTOCOL_FIELDS = ("precision", "shuffle", "augment.cutmix", "augment.cutmix_mode", "data.folds", "data.folds_order")
#: The L4S TrainData the study used.
STUDY_PATCHES = 3799


def run_deviations(params: dict[str, str], protocol: str) -> str:
    """How a fold run (its logged params) departs from the study's recipe and data; ``""`` when it does not."""
    out = []
    if params.get("data.path", "None") == "None":
        out.append("data=synthetic")
    n = int(params.get("n_train", "0") or 0) + int(params.get("n_test", "0") or 0)
    if n and n != STUDY_PATCHES:
        out.append(f"{n} patches (study: {STUDY_PATCHES:,})")
    for key, want in STUDY_RECIPE.items():
        if protocol == "honest" and key in _PROTOCOL_FIELDS:
            continue
        if key in params and params[key] != str(want):
            out.append(f"{key}={params[key]} (study: {want})")
    return "; ".join(out)


def _metrics(row: DeckRow, protocol: str) -> tuple[str, str]:
    if protocol == "study":
        if row.pp:
            return f"study_pp_{row.pp}_f1_2class_mean", f"study_pp_{row.pp}_miou_2class"
        return "study_f1_2class_mean", "study_miou_2class"
    if row.pp:
        return f"test_pp_{row.pp}_ls_f1", f"test_pp_{row.pp}_ls_iou"
    return "test_ls_f1", "test_ls_iou"


def collect_results(experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None) -> TableResults:
    """Our numbers for every row from the finished fold runs of ``experiment`` tagged with the row's ``study_row``
    (the latest per row and protocol). An experiment that does not exist gives an empty result."""
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    out = TableResults(experiment=experiment)
    if exp is None:
        return out
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.{ROW_TAG} != '' and attributes.status = 'FINISHED'"
    )
    by_tag: dict[tuple[str, str, str], Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):  # later runs overwrite earlier ones
        tags = run.data.tags
        proto = next((p for p, v in PROTOCOL_TAG_VALUES.items() if tags.get(PROTOCOL_TAG) == v), None)
        if proto is None or "fold" not in tags:
            continue
        by_tag[(tags[ROW_TAG], tags["fold"], proto)] = run
    for t in TABLES:
        for row in t.rows:
            for proto in ("study", "honest"):
                fold_label = str(row.fold if proto == "study" else row.fold - 1)
                run = by_tag.get((t.run_tag(row), fold_label, proto))
                if run is None:
                    continue
                m1, m2 = _metrics(row, proto)
                if m1 not in run.data.metrics:
                    continue
                scores = (float(run.data.metrics[m1]), float(run.data.metrics.get(m2, math.nan)))
                dev = run_deviations(run.data.params, proto)
                out.found[(t.name, row.key, proto)] = RowResult(run.info.run_id, scores, dev)
    return out


def _num(v: float | str | None) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return "n/a" if math.isnan(v) else f"{v:.4f}"


def render_markdown(results: TableResults) -> str:
    """Every deck table as Markdown, deck numbers beside ours (study and honest), ``not run`` where missing."""
    lines = [
        "# The seed study's tables: the deck, ours under the study protocol, ours honest",
        "",
        f"Runs read from MLflow experiment `{results.experiment}` (runs made with `--study-row`).",
        "",
        "- **deck**: the slide deck's 2-class mean F1 and mIoU (and the landslide-class F1 the design note derives"
        " from them), from `../shared/design/rau-net.md` or the authors' LOG where marked; n/a: not given there.",
        "- **ours, study**: `--protocol study`, the same 2-class means, with the checkpoint (and threshold) **selected"
        " on the test fold** as the authors did: comparable with the deck, optimistic by construction.",
        "- **ours, honest**: `--protocol honest --folds-order natural`, the same test block; landslide-class F1 and"
        " IoU with the epoch and threshold selected on a validation split: the project's numbers.",
        "- `*`: the run departs from the study's recipe or data (a short CPU run, say); its deviations are listed"
        " below the table.",
        "",
    ]
    for t in TABLES:
        lines += [f"## {t.title}", ""]
        if t.note:
            lines += [t.note, ""]
        lines += [
            "| row | deck F1 (2-class) | deck mIoU | deck ls F1 | deck params | source"
            " | ours study F1 (2-class) | ours study mIoU | ours honest ls F1 | ours honest ls IoU |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        notes: dict[tuple[str, str], list[str]] = {}
        for row in t.rows:
            cells = [row.label, _num(row.deck_f1), _num(row.deck_miou), _num(row.deck_ls_f1)]
            cells += [row.deck_params or "", row.source]
            for proto in ("study", "honest"):
                res = results.found.get((t.name, row.key, proto))
                if res is None:
                    cells += ["not run", "not run"]
                    continue
                mark = "*" if res.deviations else ""
                cells += [f"{_num(res.scores[0])}{mark}", f"{_num(res.scores[1])}{mark}"]
                if res.deviations:
                    notes.setdefault((proto, res.deviations), []).append(row.key)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if notes:
            lines += ["Deviations from the study's recipe:", ""]
            for (proto, dev), keys in notes.items():
                lines.append(f"- {', '.join(f'`{k}`' for k in dict.fromkeys(keys))} ({proto}): {dev}")
            lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- plan
#: The authors' LOG: 4 min 40 s per epoch of 3,039 patches on a Titan RTX (batch 12), design note section 3.1.
TITAN_EPOCH_S = 280.0
#: The project's H100 target for a 3,799-patch RAU-Net 1 epoch (not measured: no GPU was lent to this work).
H100_TARGET_EPOCH_S = 10.0


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def plan_markdown(data: str = "L4S", experiment: str | None = None) -> str:
    """The exact commands of every deck row (study and honest) for one GPU, with their expected times."""
    exp = f" --experiment {experiment}" if experiment else ""
    base = f"python -m pipelines.train_imagery --data {data}{exp} --no-progress"
    study_fold = 65 * TITAN_EPOCH_S * 1.06  # + ~95 test-fold scorings of 760 patches (~6 %)
    honest_fold = 65 * TITAN_EPOCH_S * 0.8 * 1.03  # trains on 80 % of the training part; validation 608 patches
    h100_fold = 65 * H100_TARGET_EPOCH_S * 3039 / 3799 * 1.1
    lines = [
        "# Plan: every deck row on one GPU",
        "",
        "Generated by `python -m pipelines.study_tables --plan` from `imagery/training/study_tables.py` (the tables"
        " and the commands have one source). Run the commands in any order; `python -m pipelines.study_tables"
        f"{exp}` then prints the tables with every row that has finished.",
        "",
        f"- `--data {data}`: the Landslide4Sense release (its `TrainData`, 3,799 patches; or a"
        " `prepare_imagery` cache of it, which keeps the file names the folds sort).",
        "- Study rows train on the 3,039 patches of fold 1 (the last 760 are the test fold); honest rows carve"
        " a 20 % validation split out of them and test on the same 760.",
        "- **Expected time per fold, RAU-Net 1-sized rows:**"
        f" Titan RTX (the authors' LOG, 4 min 40 s per epoch): study {_hours(study_fold)}, honest"
        f" {_hours(honest_fold)}; H100: **not measured** (no GPU was lent to this work): with the project's target"
        f" of 10 s per 3,799-patch epoch about {_hours(h100_fold)}. Measure first with"
        " `python benchmarks/imagery_bench.py --models rau_net1 small_rau_net1 --batch-sizes 12 --iters 10"
        " --epoch 3799` and scale: a fold is about 65 x the epoch time plus 10 %. Small models take a fraction of it,"
        " the traditional U-Net (31 M parameters at 128 px, 4 poolings) roughly as long.",
        "- The 5-fold rows are 5 folds each: 5x the time.",
        "",
    ]
    total_study = total_honest = 0.0
    for t in TABLES:
        lines += [f"## {t.title}", ""]
        done: set[str] = set()
        for row in t.rows:
            tag = t.run_tag(row)
            if tag in done:
                continue
            done.add(tag)
            folds = 5 if t.name == "5-fold" else 1
            args = " ".join(row.args)
            args = f" {args}" if args else ""
            study_fold_arg = "" if folds == 5 else " --fold 1"
            honest_fold_arg = "" if folds == 5 else " --fold 0"
            pp = " --postprocessing-rows" if t.name == "postprocessing" else ""
            label = "all rows" if tag.endswith("/all") else row.label
            lines += [
                f"**{label}** (`{tag}`): study {_hours(study_fold * folds)}, honest {_hours(honest_fold * folds)}"
                " on a Titan RTX",
                "",
                "```bash",
                f"{base} --protocol study{study_fold_arg} --study-row {tag}{args}",
                f"{base} --protocol honest --folds 5 --folds-order natural{honest_fold_arg}"
                f" --study-row {tag}{args}{pp}",
                "```",
                "",
            ]
            total_study += study_fold * folds
            total_honest += honest_fold * folds
    lines += [
        "## Total",
        "",
        f"Study protocol {_hours(total_study)}, honest {_hours(total_honest)} on a Titan RTX at the authors' speed"
        " (RAU-Net 1 for every row: an upper bound for the small models).",
        "",
        "Several GPUs: prefix any command with `torchrun --nproc-per-node N` and add `--sync-bn` (the global batch"
        " stays 12; see README, Imagery, multi-GPU).",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "DEFAULT_EXPERIMENT",
    "TABLES",
    "DeckRow",
    "DeckTable",
    "RowResult",
    "TableResults",
    "check_row",
    "collect_results",
    "plan_markdown",
    "render_markdown",
    "run_tags",
]
