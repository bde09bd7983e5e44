"""Models that say what they are: every training command registers its model with a card and @candidate;
promote moves aliases; models:/NAME@ALIAS loads everywhere; synthetic-data models are carded and tagged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from common.cli import UserError, run_main
from common.model_card import CARD_ARTIFACT, SYNTHETIC_LIMIT, build_card, render_card, segmenter_fields
from common.registry import resolve_version

ROOT = Path(__file__).resolve().parents[2]
TAB_FAST = ["--n-regions", "300", "--folds", "2", "--max-rounds", "30", "--early-stopping", "5"]
IMG_FAST = [
    "--n-synthetic", "8", "--synthetic-size", "32", "--width", "4", "--channels", "17", "--epochs", "1",
    "--batch-size", "4", "--no-progress", "--device", "cpu", "--overlays", "0", "--no-log-flavour",
]  # fmt: skip


def _client() -> mlflow.MlflowClient:
    uri = mlflow.get_tracking_uri()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_tabular_registered_with_card_candidate_and_promoted(tracking_uri: str, capsys) -> None:
    from pipelines import promote, train_tabular
    from tabular.serving import load_tabular_model

    assert run_main(train_tabular.main, TAB_FAST) == 0
    assert "registered landslide-tabular version 1 as models:/landslide-tabular@candidate" in capsys.readouterr().out
    client = _client()
    mv = client.get_model_version_by_alias("landslide-tabular", "candidate")
    assert str(mv.version) == "1" and mv.tags["landslide.synthetic"] == "true"
    assert "SYNTHETIC DATA" in mv.description and "fingerprint (sha256): " in mv.description
    card = Path(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=CARD_ARTIFACT)).read_text()
    assert card == mv.description and SYNTHETIC_LIMIT in card
    model = load_tabular_model("models:/landslide-tabular@candidate")
    assert model.feature_names_
    # a synthetic model is not made champion by accident
    assert run_main(promote.main, ["landslide-tabular", "1", "--alias", "champion"]) == 2
    assert "synthetic" in capsys.readouterr().err
    assert run_main(promote.main, ["landslide-tabular", "1", "--alias", "champion", "--allow-synthetic"]) == 0
    assert str(client.get_model_version_by_alias("landslide-tabular", "champion").version) == "1"
    assert load_tabular_model("models:/landslide-tabular@champion").threshold_ == model.threshold_
    assert resolve_version("models:/landslide-tabular@champion")[:2] == ("landslide-tabular", "1")
    # a second training gets version 2 as candidate; champion stays on 1
    assert run_main(train_tabular.main, [*TAB_FAST, "--seed", "3"]) == 0
    assert str(client.get_model_version_by_alias("landslide-tabular", "candidate").version) == "2"
    assert str(client.get_model_version_by_alias("landslide-tabular", "champion").version) == "1"
    assert run_main(promote.main, ["landslide-tabular", "2", "--allow-synthetic"]) == 0
    assert "previous_version: 1" in capsys.readouterr().out
    # no model named: the champion, saying which version, with a warning that it learnt from synthetic data
    from pipelines._register import model_or_champion

    lines: list[str] = []
    assert model_or_champion(None, "tabular", "--tabular-model", required=True, log=lines.append) == (
        "models:/landslide-tabular@champion"
    )
    assert lines == ["--tabular-model models:/landslide-tabular@champion: landslide-tabular version 2"]
    assert "trained on SYNTHETIC data" in capsys.readouterr().err
    assert model_or_champion(None, "fusion", "--fusion-model", required=False) is None  # none registered
    with pytest.raises(UserError, match="models:/landslide-imagery@champion is not registered"):
        model_or_champion(None, "imagery", "--model", required=True)


def test_predict_scene_without_model_and_without_champion_is_one_line(tracking_uri: str, tmp_path: Path, capsys):
    from pipelines import predict_scene

    assert run_main(predict_scene.main, ["--scene", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pipelines.promote landslide-imagery VERSION --alias champion" in err


@pytest.mark.slow  # ~40 s on the loaded CPU; tests/imagery/test_train.py runs the same registration by default
def test_imagery_registered_and_loadable_by_alias(tracking_uri: str, tmp_path: Path) -> None:
    from imagery.inference.serving import load_segmenter
    from pipelines.train_imagery import run

    run([*IMG_FAST, "--checkpoint-dir", str(tmp_path / "ck"), "--register-name", "my-segmenter"])
    mv = _client().get_model_version_by_alias("my-segmenter", "candidate")
    assert mv.tags["landslide.synthetic"] == "true"
    assert "band set: B1" in mv.description and "ground sampling distance: not recorded" in mv.description
    seg = load_segmenter("models:/my-segmenter@candidate")
    assert seg.meta.channel_set == 17


def test_no_register_leaves_the_registry_alone(tracking_uri: str, tmp_path: Path) -> None:
    from pipelines import train_tabular

    assert run_main(train_tabular.main, [*TAB_FAST, "--no-register"]) == 0
    assert _client().search_registered_models() == []


def test_fuser_registered_and_loadable(tracking_uri: str) -> None:
    from fusion.stacking import load_fuser
    from pipelines import train_fusion
    from tests.fusion.helpers import log_oof_run, oof_pair

    t, i = oof_pair()
    tab = log_oof_run("t", t, extra={"tabular_model.json": {"feature_names": ["a", "b"]}})
    img = log_oof_run("i", i, params={"model.channel_set": "14"})
    assert run_main(train_fusion.main, ["--tabular-run", tab, "--imagery-run", img]) == 0
    mv = _client().get_model_version_by_alias("landslide-fuser", "candidate")
    assert mv.tags["landslide.data_kind"] == "unknown"  # the base runs carry no synthetic/real tag
    assert load_fuser("models:/landslide-fuser@candidate").meta_["tabular_run_id"] == tab


def test_promote_errors_are_one_line(tracking_uri: str) -> None:
    cmd = [sys.executable, "-m", "pipelines.promote", "no-such-model", "1", "--tracking-uri", tracking_uri]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no-such-model" in proc.stderr
    from common.registry import set_alias

    with pytest.raises(UserError, match="--alias"):
        set_alias("x", 1, "v1")


def test_card_reads_segmenter_metadata_when_present_and_falls_back() -> None:
    meta = {
        "band_order": ["B2", "B3", "B4", "B8"],
        "channels": ["B2", "B3", "B4", "B8", "NDVI"],
        "threshold": 0.42,
        "gsd_m": 10,
        "temporal": "pre-post",
        "training_data": {"name": "Sen12Landslides S12LS-LD", "kind": "real", "fingerprint": "abc123"},
    }
    card = build_card(
        title="t", kind="imagery", run_id="r", params={"data_sha256": "zzz"}, metrics={"ls_f1_mean": 0.5,
        "ls_f1_std": 0.1, "f1": 0.7, "f1_lo": 0.6, "f1_hi": 0.8}, data_name="fallback", data_kind="synthetic",
        extra=segmenter_fields(meta),
    )  # fmt: skip
    text = render_card(card)
    assert card.training_data.kind == "real" and card.training_data.fingerprint == "abc123"
    assert "ground sampling distance: 10 m" in text and "temporal set: pre-post" in text
    assert "ls_f1: 0.5 ± 0.1" in text and "f1: 0.7 [0.6, 0.8]" in text and "decision threshold: 0.42" in text
    assert "SYNTHETIC" not in text
    bare = segmenter_fields({})
    assert bare["gsd_m"] == "not recorded" and "training_data" not in bare
