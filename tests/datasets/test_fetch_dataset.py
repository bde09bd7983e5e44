"""pipelines.fetch_dataset against a local HTTP server on 127.0.0.1 serving small archives in the true layouts:
listing APIs, range resume (after a dropped connection and after a killed run), checksums, errors, atomicity."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from common.cli import UserError
from imagery.data.fetch import HF_REPO, ZENODO_RECORD, fetch, verify
from imagery.data.l4s import detect_layout, list_patch_files, write_image, write_mask
from tests.datasets.server import Routes, serve

ROOT = Path(__file__).resolve().parents[2]


def _h5_bytes(tmp: Path, name: str, kind: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    path = tmp / name
    if kind == "img":
        write_image(path, rng.random((14, 128, 128), dtype=np.float32))
    else:
        write_mask(path, (rng.random((128, 128)) > 0.9).astype(np.uint8))
    return path.read_bytes()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def l4s_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("l4s")
    img = [_h5_bytes(tmp, f"image_{i}.h5", "img", i) for i in (1, 2)]
    mask = [_h5_bytes(tmp, f"mask_{i}.h5", "mask", i) for i in (1, 2)]
    return {
        # as published: a top folder with img/ and mask/
        "TrainData.zip": _zip(
            {
                "TrainData/img/image_1.h5": img[0],
                "TrainData/img/image_2.h5": img[1],
                "TrainData/mask/mask_1.h5": mask[0],
                "TrainData/mask/mask_2.h5": mask[1],
            }
        ),
        # another nesting: img/ and mask/ at the top
        "ValidData.zip": _zip({"img/image_1.h5": img[0], "mask/mask_1.h5": mask[0]}),
        "TestData.zip": _zip({"TestData/img/image_5.h5": img[1]}),
    }


def _l4s_routes(archives: dict[str, bytes], *, record: bool = True, checksums: dict[str, str] | None = None) -> Routes:
    routes = Routes()
    base = f"/records/{ZENODO_RECORD}"
    for key, data in archives.items():
        routes.files[f"{base}/files/{key}/content"] = data
    if record:
        files = [{"key": k, "size": len(d), "checksum": (checksums or {}).get(k, _md5(d))} for k, d in archives.items()]
        routes.files[base] = json.dumps({"id": ZENODO_RECORD, "files": files}).encode()
    return routes


def _quiet(_: str) -> None:
    pass


def test_landslide4sense_unpacks_into_the_layout_train_imagery_reads(tmp_path: Path, l4s_archives) -> None:
    routes = _l4s_routes(l4s_archives)
    out = tmp_path / "l4s"
    with serve(routes) as url:
        report = fetch("landslide4sense", out, base_url=url, progress=False, log=_quiet)
    assert sorted(report.folders) == sorted(str(out / d) for d in ("TrainData", "ValidData", "TestData"))
    assert detect_layout(out) == "official"
    train = list_patch_files(out, "train")
    assert [f.image.name for f in train] == ["image_1.h5", "image_2.h5"]
    assert (out / "ValidData" / "mask" / "mask_1.h5").exists()  # the other nesting lands in the same layout
    state = json.loads((out / ".fetch" / "landslide4sense.json").read_text())
    assert state["files"]["TrainData.zip"]["checksum"] == _md5(l4s_archives["TrainData.zip"])
    assert "Zenodo" in state["files"]["TrainData.zip"]["checksum_source"]
    assert verify("landslide4sense", out) == []
    assert not list(out.rglob("*.part")) and not list(out.glob(".*.tmp"))


def test_a_dropped_connection_resumes_with_a_range_request(tmp_path: Path, l4s_archives) -> None:
    routes = _l4s_routes(l4s_archives)
    path = f"/records/{ZENODO_RECORD}/files/TrainData.zip/content"
    routes.drop_after[path] = 100_000
    with serve(routes) as url:
        fetch("landslide4sense", tmp_path / "d", parts=["train"], base_url=url, progress=False, log=_quiet)
    ranges = [r["range"] for r in routes.requests if r["path"] == path]
    assert ranges == [None, "bytes=100000-"]
    assert (tmp_path / "d" / "downloads" / "TrainData.zip").read_bytes() == l4s_archives["TrainData.zip"]


def test_a_host_checksum_mismatch_is_one_line_and_leaves_nothing_that_looks_complete(
    tmp_path: Path, l4s_archives
) -> None:
    routes = _l4s_routes(l4s_archives, checksums={"TrainData.zip": "md5:" + "0" * 32})
    out = tmp_path / "bad"
    with serve(routes) as url, pytest.raises(UserError, match=r"TrainData\.zip: checksum or size mismatch.*run again"):
        fetch("landslide4sense", out, parts=["train"], base_url=url, progress=False, log=_quiet)
    assert not (out / "TrainData").exists()
    assert not (out / ".fetch" / "landslide4sense.json").exists()
    assert not list((out / "downloads").glob("TrainData.zip*"))  # the bad bytes were deleted


def test_without_published_checksums_the_lock_file_catches_a_corrupted_archive(
    tmp_path: Path, l4s_archives, tracking_uri: str
) -> None:
    from pipelines.fetch_dataset import main

    routes = _l4s_routes(l4s_archives, record=False)  # the listing is unreadable: names from the code
    out = tmp_path / "l4s"
    with serve(routes) as url:
        fetch("landslide4sense", out, parts=["train", "val"], base_url=url, progress=False, log=_quiet)
    lock = json.loads((out / ".fetch" / "landslide4sense.lock.json").read_text())
    assert lock["TrainData.zip"]["sha256"] == hashlib.sha256(l4s_archives["TrainData.zip"]).hexdigest()
    assert main(["landslide4sense", "--out", str(out), "--verify-only"]) == 0
    archive = out / "downloads" / "ValidData.zip"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    archive.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"ValidData\.zip.*differs from the first download"):
        main(["landslide4sense", "--out", str(out), "--verify-only"])


def test_http_404_names_the_file_and_what_to_do(tmp_path: Path, l4s_archives) -> None:
    routes = _l4s_routes(l4s_archives)
    routes.status[f"/records/{ZENODO_RECORD}/files/TestData.zip/content"] = 404
    with serve(routes) as url, pytest.raises(UserError, match=r"TestData\.zip: HTTP 404 .*check --url"):
        fetch("landslide4sense", tmp_path / "x", parts=["test"], base_url=url, progress=False, log=_quiet)


def test_disk_space_is_checked_before_any_download(tmp_path: Path, l4s_archives, monkeypatch) -> None:
    import shutil as _shutil

    from common import atomic

    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: _shutil._ntuple_diskusage(10, 10, 1000))
    routes = _l4s_routes(l4s_archives)
    with serve(routes) as url, pytest.raises(UserError, match="not enough free space"):
        fetch("landslide4sense", tmp_path / "x", base_url=url, progress=False, log=_quiet)
    assert all("/files/" not in r["path"] for r in routes.requests)


def test_a_killed_run_leaves_no_complete_looking_folder_and_resume_continues(
    tmp_path: Path, l4s_archives, tracking_uri: str
) -> None:
    from pipelines.fetch_dataset import main

    routes = _l4s_routes(l4s_archives)
    routes.throttle = 0.02  # ~800 KB/s: the kill lands mid-download
    out = tmp_path / "l4s"
    path = f"/records/{ZENODO_RECORD}/files/TrainData.zip/content"
    part = out / "downloads" / "TrainData.zip.part"
    with serve(routes) as url:
        # a process of its own (the library call, without the CLI's MLflow start-up), killed with SIGKILL
        code = (
            "from imagery.data.fetch import fetch; "
            f"fetch('landslide4sense', {str(out)!r}, parts=['train'], base_url={url!r}, progress=False)"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while not (part.exists() and part.stat().st_size > 50_000):
                assert proc.poll() is None and time.monotonic() < deadline, "the download never started"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert not (out / "TrainData").exists() and not (out / ".fetch" / "landslide4sense.json").exists()
        assert verify("landslide4sense", out)  # says nothing complete is recorded
        have = part.stat().st_size
        routes.throttle = 0.0
        assert main(["landslide4sense", "--out", str(out), "--url", url, "--parts", "train", "--resume",
                     "--no-progress", "--tracking-uri", tracking_uri]) == 0  # fmt: skip
    assert [r["range"] for r in routes.requests if r["path"] == path][-1] == f"bytes={have}-"
    assert (out / "downloads" / "TrainData.zip").read_bytes() == l4s_archives["TrainData.zip"]
    assert len(list_patch_files(out, "train")) == 2


def _hf_routes() -> tuple[Routes, dict[str, bytes]]:
    s2 = _targz({"italy_s2_4120.nc": b"CDF-s2" * 100, "chimanimani_s2_1024.nc": b"CDF-s2b" * 100})
    s1 = _targz({"s1asc/italy_s1asc_4120.nc": b"CDF-s1" * 100})
    inventory = _zip({"inventories.shp": b"shp"})
    splits = json.dumps({"train": ["italy_s2_4120.nc"], "val": [], "test": []}).encode()
    files = {
        "s2/s2_part1.tar.gz": s2,
        "s1asc/s1asc_part1.tar.gz": s1,
        "inventories.shp.zip": inventory,
        "tasks/S12LS-LD/s2/splits.json": splits,
    }
    tree = [{"type": "directory", "path": "s2"}]
    for path, data in files.items():
        entry = {"type": "file", "path": path, "size": len(data), "oid": "0" * 40}
        if path.endswith((".gz", ".zip")):  # LFS files carry their sha256
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 130}
        tree.append(entry)
    routes = Routes()
    routes.files[f"/api/datasets/{HF_REPO}/tree/main?recursive=true"] = json.dumps(tree).encode()
    for path, data in files.items():
        if path.endswith((".gz", ".zip")):  # LFS files redirect to a CDN, as on the Hub
            routes.redirects[f"/datasets/{HF_REPO}/resolve/main/{path}"] = f"/cdn/{path}"
            routes.files[f"/cdn/{path}"] = data
        else:
            routes.files[f"/datasets/{HF_REPO}/resolve/main/{path}"] = data
    return routes, files


def test_sen12landslides_parts_extras_and_token(tmp_path: Path) -> None:
    routes, files = _hf_routes()
    out = tmp_path / "s12"
    with serve(routes) as url:
        fetch("sen12landslides", out, parts=["s2"], base_url=url, progress=False, log=_quiet, env={"HF_TOKEN": "t0k"})
    assert sorted(p.name for p in (out / "s2").iterdir()) == ["chimanimani_s2_1024.nc", "italy_s2_4120.nc"]
    assert not (out / "s1asc").exists()  # not asked for
    assert (out / "tasks" / "S12LS-LD" / "s2" / "splits.json").read_bytes() == files["tasks/S12LS-LD/s2/splits.json"]
    assert (out / "inventories.shp.zip").exists()
    state = json.loads((out / ".fetch" / "sen12landslides.json").read_text())
    assert state["files"]["s2/s2_part1.tar.gz"]["checksum"].startswith("sha256:")
    assert state["files"]["tasks/S12LS-LD/s2/splits.json"]["checksum"] is None  # only the lock file checks it
    # the token goes to the Hub, never along the redirect to the CDN
    assert {r["auth"] for r in routes.requests if not r["path"].startswith("/cdn/")} == {"Bearer t0k"}
    assert {r["auth"] for r in routes.requests if r["path"].startswith("/cdn/")} == {None}
    assert verify("sen12landslides", out) == []


def test_sen12landslides_403_says_to_accept_the_terms(tmp_path: Path) -> None:
    routes, _ = _hf_routes()
    routes.status[f"/datasets/{HF_REPO}/resolve/main/s2/s2_part1.tar.gz"] = 403
    with serve(routes) as url, pytest.raises(UserError, match=r"s2/s2_part1\.tar\.gz: HTTP 403 .*accept the dataset"):
        fetch("sen12landslides", tmp_path / "x", parts=["s2"], base_url=url, progress=False, log=_quiet, env={})
    assert not (tmp_path / "x" / "s2").exists()


def test_bad_part_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--parts s9: not a part of sen12landslides"):
        fetch("sen12landslides", tmp_path, parts=["s9"], base_url="http://127.0.0.1:9", progress=False, log=_quiet)
