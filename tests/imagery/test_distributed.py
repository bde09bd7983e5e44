"""Multi-process training under torchrun (gloo, CPU, 2 ranks) against one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from common.cli import UserError
from imagery.training.distributed import check_world, resume_world_note, shard_bounds

ROOT = Path(__file__).resolve().parents[2]

#: What the tests allow between 2 ranks (gloo) and one process, same global batch, --sync-bn, dropout 0:
#: per-epoch training loss (relative) and validation landslide F1 (absolute); measured: 3e-7 and 0 (equal).
LOSS_RTOL = 1e-4
F1_ATOL = 1e-3
#: Share of weights allowed to differ by more than 1e-4 (measured 0.1 %): the conv biases that feed a batch norm
#: have a zero gradient in exact arithmetic, and Adam turns the floating-point noise in it into steps of up to lr.
WEIGHT_SHARE = 0.005


def test_shards_cover_the_global_batch_in_order() -> None:
    for n in range(1, 14):
        for world in range(1, 5):
            bounds = [shard_bounds(n, world, r) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_more_ranks_than_patches_per_batch_is_a_one_line_error() -> None:
    with pytest.raises(UserError, match="4 ranks but a global batch of 3 patches") as err:
        check_world(4, 3, 100)
    assert "\n" not in str(err.value) and "--nproc-per-node <= 3" in str(err.value)
    with pytest.raises(UserError, match="2 ranks but only 1 training patches"):
        check_world(2, 12, 1)
    check_world(1, 1, 1)


def _args(*extra: str) -> list[str]:
    # 9 synthetic patches: 7 train (batches 3, 3, 1: rank 1 idles in the last one) + 2 validation
    return [
        "--n-synthetic", "9", "--synthetic-size", "32", "--width", "4", "--channels", "17", "--epochs", "2",
        "--batch-size", "3", "--bn-momentum", "0.1", "--dropout", "0", "--cutmix", "--cutmix-mode", "study",
        "--lr", "3e-3", "--schedule", "constant", "--no-progress", "--device", "cpu", "--overlays", "0",
        "--no-log-flavour", "--json", *extra,
    ]  # fmt: skip


def _torchrun(args: list[str], tracking_uri: str, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "pipelines.train_imagery", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def _history(client: mlflow.MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def _weights(uri: str) -> dict[str, torch.Tensor]:
    from imagery.inference.serving import load_segmenter

    return {k: v.float() for k, v in load_segmenter(uri, device="cpu").model.state_dict().items()}


def test_torchrun_two_gloo_ranks_match_one_process(tmp_path: Path, tracking_uri: str) -> None:
    from pipelines.train_imagery import run

    proc = _torchrun(_args("--sync-bn", "--run-name", "ddp", "--checkpoint-dir", str(tmp_path / "ck")), tracking_uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = run(_args("--run-name", "single"))
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert sorted(r.info.run_name for r in runs) == ["ddp", "single"]  # rank 1 logged nothing
    ddp = next(r for r in runs if r.info.run_name == "ddp")
    assert ddp.data.tags["ddp_world_size"] == "2" and ddp.data.tags["ddp_sync_bn"] == "True"
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["checkpoint.pt", "run.json"]
    loss_ddp, loss_one = _history(client, ddp.info.run_id, "train_loss"), _history(client, single.run_id, "train_loss")
    np.testing.assert_allclose(loss_ddp, loss_one, rtol=LOSS_RTOL)
    np.testing.assert_allclose(
        _history(client, ddp.info.run_id, "val_ls_f1"), _history(client, single.run_id, "val_ls_f1"), atol=F1_ATOL
    )
    assert ddp.data.metrics["threshold"] == pytest.approx(client.get_run(single.run_id).data.metrics["threshold"])
    w_ddp = _weights(f"runs:/{ddp.info.run_id}/segmenter")
    w_one = _weights(single.model_uris[0])
    assert w_ddp.keys() == w_one.keys()
    differ = sum(int(((w_ddp[k] - w_one[k]).abs() > 1e-4).sum()) for k in w_ddp)
    assert differ / sum(v.numel() for v in w_ddp.values()) < WEIGHT_SHARE


def _kill_after_first_epoch(args: list[str], tracking_uri: str, checkpoint: Path) -> None:
    """Start a 2-rank job and SIGKILL its whole process group once rank 0 has checkpointed epoch 1."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": tracking_uri, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    proc = subprocess.Popen(
        [*cmd, "-m", "pipelines.train_imagery", *args], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.is_file():
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.2)
    finally:
        proc.wait(timeout=60)


@pytest.mark.slow
def test_torchrun_resume_across_ranks_and_without_sync_bn(tmp_path: Path, tracking_uri: str) -> None:
    """A 2-rank job killed after its first checkpoint and resumed by 2 ranks ends where an uninterrupted one-process
    run does; without --sync-bn each rank normalises its own shard (the difference is printed)."""
    from pipelines.train_imagery import run

    ck = tmp_path / "ck"
    args = _args("--sync-bn", "--checkpoint-dir", str(ck), "--epochs", "4")
    _kill_after_first_epoch(args, tracking_uri, ck / "checkpoint.pt")
    done = torch.load(ck / "checkpoint.pt", weights_only=True)["epoch_done"]
    assert 1 <= done <= 4
    resumed = _torchrun([*args, "--resume"], tracking_uri)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    single = run(_args("--epochs", "4", "--run-name", "single"))
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    ddp = next(r for r in runs if r.info.run_id != single.run_id)
    assert ddp.info.status == "FINISHED" and len(runs) == 2  # the killed run was continued, not duplicated
    np.testing.assert_allclose(
        _history(client, ddp.info.run_id, "train_loss"), _history(client, single.run_id, "train_loss"), rtol=LOSS_RTOL
    )
    local_bn = _torchrun(_args("--epochs", "4", "--run-name", "local-bn"), tracking_uri)
    assert local_bn.returncode == 0, local_bn.stderr[-3000:]
    lb = next(
        r
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if r.info.run_name == "local-bn"
    )
    one = np.array(_history(client, single.run_id, "train_loss"))
    rel = np.abs(np.array(_history(client, lb.info.run_id, "train_loss")) - one) / one
    print(f"without --sync-bn: relative train_loss difference per epoch {np.round(rel, 4)}")
    assert np.isfinite(rel).all()


def test_resume_with_another_world_size_keeps_the_global_batch_and_says_so() -> None:
    assert resume_world_note(None, 2, 8) is None  # an older checkpoint that does not record it
    assert resume_world_note(2, 2, 8) is None
    note = resume_world_note(2, 4, 8)
    assert note is not None and "\n" not in note
    assert (
        "2 rank(s), resuming on 4" in note and "global batch of 8 patches is kept" in note and "takes 2 patches" in note
    )
    assert "takes 2-3 patches (uneven shards)" in str(resume_world_note(1, 3, 8))
    assert "takes 8 patches" in str(resume_world_note(4, 1, 8))
    with pytest.raises(UserError, match=r"written by 2 rank\(s\) with a global batch of 4 patches, which 8 ranks"):
        resume_world_note(2, 8, 4)
