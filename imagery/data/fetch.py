"""The public landslide training sets: where their files are, how to check them, and the layout they unpack to.

Used by ``python -m pipelines.fetch_dataset`` (downloads through :mod:`common.download`). No torch here.

**Landslide4Sense** (Zenodo record 10463239, CC-BY-4.0). The file list, exact sizes and md5 checksums are read
at run time from the record's public API (``{base}/records/10463239``, ``base`` = ``https://zenodo.org/api``):
those checksums are the host's own. When that listing cannot be read, the names recorded here are used
(:data:`L4S_FILES`: the three names and rounded sizes agree across several independent public projects that
download the record, checked 2026-12, with the same ``/api/records/10463239/files/<name>/content`` URL form used
here; no checksum is recorded, so the lock file records the first download). Those projects also say that only
``TrainData.zip`` carries masks in this record: ``val``/``test`` unpack images only unless mask archives are added.
Parts: ``train`` -> ``TrainData/``, ``val`` ->
``ValidData/``, ``test`` -> ``TestData/``, each with ``img/image_N.h5`` and ``mask/mask_N.h5`` (the ``official``
layout :mod:`imagery.data.l4s` reads), whatever the folder nesting inside the archives. Every archive whose name
starts with the split's prefix goes to that split, so mask archives released later land beside the images.

**Sen12Landslides** (Hugging Face dataset ``paulhoehn/Sen12Landslides``). The file list, sizes and sha256
checksums (the Git LFS object ids, which *are* sha256 digests of the files) are read at run time from the Hub's
public tree API (``{base}/api/datasets/paulhoehn/Sen12Landslides/tree/main?recursive=true``, ``base`` =
``https://huggingface.co``); small non-LFS files (task splits, norm statistics) have no published sha256 and
are checked against the lock file. No file names are recorded here: the archives' part names were not readable
offline (**unverified**: the dataset card shows ``<sensor>/...part*.tar.gz`` archives of
``<region>_<sensor>_<id>.nc`` patches). Parts ``s2``, ``s1asc``, ``s1dsc``: every archive under that folder is
unpacked into ``s2/`` (etc.) as flat ``.nc`` files; everything else of the repository (task splits
``S12LS-LD``/``S12LS-AD``, norm statistics, ``inventories.shp.zip``) is fetched as is, in its own path. A gated
dataset needs ``HF_TOKEN`` (sent as a bearer token).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from common.atomic import atomic_dir, atomic_write, check_free_space
from common.download import LockFile, RemoteFile, check_file, download, fetch_json
from common.errors import UserError

DatasetName = Literal["landslide4sense", "sen12landslides"]
DATASETS: tuple[str, ...] = get_args(DatasetName)

ZENODO_RECORD = "10463239"
L4S_DEFAULT_URL = "https://zenodo.org/api"
L4S_PARTS = {"train": ("TrainData", "Train"), "val": ("ValidData", "Valid"), "test": ("TestData", "Test")}
#: Fallback when the record's listing is unreadable: name -> approximate size in bytes (names and rounded sizes as
#: independent public projects downloading the record list them: 2.5 GB, 143.4 MB, 470.9 MB). Never an exact check.
L4S_FILES: dict[str, int] = {"TrainData.zip": 2_500_000_000, "ValidData.zip": 143_400_000, "TestData.zip": 470_900_000}

HF_REPO = "paulhoehn/Sen12Landslides"
S12_DEFAULT_URL = "https://huggingface.co"
S12_PARTS = ("s2", "s1asc", "s1dsc")
EXTRAS = "extras"
#: Unpacked size over archive size, for the disk-space check before starting (an estimate).
EXTRACT_FACTOR = 2.0
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
_IMAGE_RE = re.compile(r"^image_\d+\.h5$")
_MASK_RE = re.compile(r"^mask_\d+\.h5$")
STATE_DIR = ".fetch"


@dataclass(frozen=True)
class PlannedFile:
    """A remote file, the part it belongs to and whether it is unpacked (``archive``) or kept as is."""

    remote: RemoteFile
    part: str
    archive: bool


@dataclass
class FetchReport:
    """What :func:`fetch` did: files fetched or already there, folders written, notes (unverified values...)."""

    files: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bytes_total: int = 0


def default_url(dataset: str) -> str:
    return L4S_DEFAULT_URL if dataset == "landslide4sense" else S12_DEFAULT_URL


def all_parts(dataset: str) -> tuple[str, ...]:
    return tuple(L4S_PARTS) if dataset == "landslide4sense" else S12_PARTS


def check_parts(dataset: str, parts: Sequence[str] | None) -> list[str]:
    """The parts asked for (default all), each checked against the dataset's parts."""
    known = all_parts(dataset)
    chosen = list(parts) if parts else list(known)
    bad = [p for p in chosen if p not in known]
    if bad:
        raise UserError(f"--parts {','.join(bad)}: not a part of {dataset}; expected some of {','.join(known)}")
    return chosen


def auth_headers(dataset: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``Authorization: Bearer $HF_TOKEN`` for Sen12Landslides when the variable is set."""
    token = (env if env is not None else os.environ).get("HF_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token and dataset == "sen12landslides" else {}


def _is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _l4s_part(key: str) -> str | None:
    for part, (_, prefix) in L4S_PARTS.items():
        if key.startswith(prefix):
            return part
    return None


def plan_landslide4sense(base: str, parts: Sequence[str], log: Callable[[str], None] = print) -> list[PlannedFile]:
    """Files of the chosen L4S parts: from the Zenodo record's listing, else from :data:`L4S_FILES`."""
    base = base.rstrip("/")
    try:
        record = fetch_json(f"{base}/records/{ZENODO_RECORD}")
        entries = record.get("files") or []
        if isinstance(entries, Mapping):  # InvenioRDM: {"entries": [...]} in some versions
            entries = entries.get("entries") or []
        listed = [
            (str(e["key"]), int(e["size"]) if e.get("size") is not None else None, e.get("checksum"))
            for e in entries
            if "key" in e
        ]
        source = f"published by Zenodo record {ZENODO_RECORD}"
    except UserError as exc:
        log(f"note: cannot read the record's file list ({exc}); using the names recorded in the code (unverified)")
        listed = [(name, None, None) for name in L4S_FILES]
        source = ""
    out = []
    for key, size, checksum in listed:
        part = _l4s_part(key)
        if part is None or part not in parts:
            continue
        url = f"{base}/records/{ZENODO_RECORD}/files/{key}/content"
        out.append(PlannedFile(RemoteFile(key, url, size, checksum or None, source if checksum else ""), part, True))
    missing = [p for p in parts if not any(f.part == p for f in out)]
    if missing:
        raise UserError(f"Zenodo record {ZENODO_RECORD} at {base} lists no file for part(s) {','.join(missing)}")
    return out


def plan_sen12landslides(base: str, parts: Sequence[str], headers: Mapping[str, str]) -> list[PlannedFile]:
    """Files of the chosen Sen12Landslides parts plus the extras, from the Hub's tree API."""
    base = base.rstrip("/")
    entries = fetch_json(f"{base}/api/datasets/{HF_REPO}/tree/main?recursive=true", headers)
    if not isinstance(entries, list):
        raise UserError(f"{base}: the tree listing of {HF_REPO} is not a list; check --url")
    out = []
    for e in entries:
        if e.get("type") != "file":
            continue
        path = str(e["path"])
        if path.startswith(".") or path.lower() in ("readme.md",) or "/." in path:
            continue
        top = path.split("/", 1)[0]
        part = top if top in S12_PARTS else EXTRAS
        if part != EXTRAS and part not in parts:
            continue
        lfs = e.get("lfs") or {}
        size = lfs.get("size", e.get("size"))
        checksum = f"sha256:{lfs['oid']}" if lfs.get("oid") else None
        source = f"Git LFS sha256 published by the Hugging Face Hub for {HF_REPO}" if checksum else ""
        url = f"{base}/datasets/{HF_REPO}/resolve/main/{path}"
        archive = part != EXTRAS and _is_archive(path)
        out.append(
            PlannedFile(RemoteFile(path, url, int(size) if size is not None else None, checksum, source), part, archive)
        )
    missing = [p for p in parts if not any(f.part == p for f in out)]
    if missing:
        raise UserError(
            f"{HF_REPO} at {base} lists no file under {','.join(missing)}/; check --url or the dataset page"
        )
    return out


def plan(dataset: str, base: str, parts: Sequence[str], headers: Mapping[str, str], log=print) -> list[PlannedFile]:
    if dataset == "landslide4sense":
        return plan_landslide4sense(base, parts, log)
    return plan_sen12landslides(base, parts, headers)


def part_folder(dataset: str, part: str) -> str:
    """The folder (under ``--out``) a part unpacks into."""
    return L4S_PARTS[part][0] if dataset == "landslide4sense" else part


def _extract(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest`` (members outside ``dest`` refused); a broken archive is one line."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    target = (dest / info.filename).resolve()
                    if not str(target).startswith(str(dest.resolve())):
                        raise UserError(f"{archive}: member {info.filename!r} would land outside the folder")
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename:
            raise
        raise UserError(f"{archive}: cannot unpack ({exc}); delete it and fetch again") from None


def _normalise(raw: Path, staging: Path, dataset: str, archives: Sequence[Path]) -> int:
    """Move the patches of ``raw`` into the layout the readers expect; returns the number of patch files."""
    n = 0
    for path in sorted(raw.rglob("*")):
        if not path.is_file():
            continue
        if dataset == "landslide4sense":
            sub = "img" if _IMAGE_RE.match(path.name) else "mask" if _MASK_RE.match(path.name) else None
            if sub is None:
                continue
            (staging / sub).mkdir(exist_ok=True)
            os.replace(path, staging / sub / path.name)
        elif path.suffix == ".nc":
            os.replace(path, staging / path.name)
        else:
            continue
        n += 1
    if n == 0:
        what = "image_N.h5 / mask_N.h5" if dataset == "landslide4sense" else "<region>_<sensor>_<id>.nc"
        raise UserError(f"{', '.join(a.name for a in archives)}: no {what} files inside; the host's layout changed?")
    return n


def unpack_part(dataset: str, out: Path, part: str, archives: Sequence[Path]) -> Path:
    """Unpack a part's archives into ``out/<part folder>``, published whole (never a half-filled folder)."""
    folder = out / part_folder(dataset, part)
    with atomic_dir(folder, replace=True) as staging:
        raw = staging / ".raw"
        for archive in archives:
            _extract(archive, raw)
        _normalise(raw, staging, dataset, archives)
        shutil.rmtree(raw, ignore_errors=True)
    return folder


def state_path(out: Path, dataset: str) -> Path:
    return out / STATE_DIR / f"{dataset}.json"


def _read_state(out: Path, dataset: str) -> dict[str, Any]:
    path = state_path(out, dataset)
    if not path.exists():
        return {"dataset": dataset, "parts": {}, "files": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_state(out: Path, dataset: str, state: Mapping[str, Any]) -> None:
    with atomic_write(state_path(out, dataset)) as fh:
        json.dump(state, fh, indent=2, sort_keys=True)


def fetch(
    dataset: str,
    out: str | os.PathLike[str],
    *,
    parts: Sequence[str] | None = None,
    base_url: str | None = None,
    resume: bool = False,
    lock_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    env: Mapping[str, str] | None = None,
) -> FetchReport:
    """Download, verify and unpack ``parts`` of ``dataset`` into ``out`` (see the module docstring).

    Archives are kept under ``out/downloads/`` (so ``--verify-only`` can check them); ``out/.fetch/<dataset>.json``
    records the parts completed and the files with their checksums, written after each part's folder is whole.
    """
    if dataset not in DATASETS:
        raise UserError(f"dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    root = Path(out)
    chosen = check_parts(dataset, parts)
    base = base_url or default_url(dataset)
    headers = auth_headers(dataset, env)
    files = plan(dataset, base, chosen, headers, log)
    downloads = root / "downloads"
    lock = LockFile(lock_path or root / STATE_DIR / f"{dataset}.lock.json")
    state = _read_state(root, dataset)
    report = FetchReport()

    need = 0
    for f in files:
        dest = downloads / f.remote.name
        size = f.remote.size or L4S_FILES.get(f.remote.name, 0)
        if not dest.exists():
            part_file = dest.with_name(dest.name + ".part")
            have = part_file.stat().st_size if (resume and part_file.exists()) else 0
            need += max(0, size - have)
        if f.archive and part_folder(dataset, f.part) not in state["parts"].values():
            need += int(size * EXTRACT_FACTOR)
    root.mkdir(parents=True, exist_ok=True)
    check_free_space(root, need, what=f"{dataset} ({', '.join(chosen)}: downloads and unpacked files)")
    unknown = [f.remote.name for f in files if f.remote.checksum is None]
    if unknown:
        report.notes.append(
            f"no published checksum for {len(unknown)} file(s) ({', '.join(unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''}): checked against the first download recorded in {lock.path}"
        )

    by_part: dict[str, list[Path]] = {}
    fresh: set[str] = set()
    for f in files:
        dest = downloads / f.remote.name if f.archive else root / f.remote.name
        missing = check_file(dest, f.remote) is not None
        if missing:
            fresh.add(f.part)
        log(f"{f.remote.name}: {'fetching' if missing else 'already here, verified'}")
        download(f.remote, dest, resume=resume, headers=headers, progress=progress)
        lock.check_or_record(f.remote.name, dest, f.remote.url)
        state["files"][f.remote.name] = {**asdict(f.remote), "part": f.part, "archive": f.archive, "path": str(dest)}
        report.files.append(f.remote.name)
        report.bytes_total += dest.stat().st_size
        if f.archive:
            by_part.setdefault(f.part, []).append(dest)
    for part, archives in by_part.items():
        done = root / part_folder(dataset, part)
        if part not in fresh and state["parts"].get(part) == done.name and done.is_dir():
            log(f"{part}: {done} already unpacked from these archives")
            continue
        folder = unpack_part(dataset, root, part, archives)
        state["parts"][part] = folder.name
        _write_state(root, dataset, state)
        report.folders.append(str(folder))
        log(f"{part}: unpacked {len(archives)} archive(s) into {folder}")
    _write_state(root, dataset, state)
    return report


def verify(dataset: str, out: str | os.PathLike[str], *, lock_path: str | os.PathLike[str] | None = None) -> list[str]:
    """Problems with a fetched dataset in ``out`` (empty when every file and part folder checks out).

    Every file recorded in ``out/.fetch/<dataset>.json`` must exist with its published size and checksum and
    match the lock file; every recorded part folder must exist and hold files. No network needed.
    """
    root = Path(out)
    path = state_path(root, dataset)
    if not path.exists():
        return [f"{root}: no completed fetch of {dataset} recorded ({path} missing); run without --verify-only"]
    state = _read_state(root, dataset)
    lock = LockFile(lock_path or root / STATE_DIR / f"{dataset}.lock.json")
    problems = []
    for name, entry in sorted(state["files"].items()):
        remote = RemoteFile(
            name, entry["url"], entry.get("size"), entry.get("checksum"), entry.get("checksum_source", "")
        )
        file_path = Path(entry["path"])
        problem = check_file(file_path, remote)
        if problem is None:
            try:
                lock.check_or_record(name, file_path, remote.url)
            except UserError as exc:
                problem = str(exc)
        if problem:
            problems.append(problem)
    for part, folder in sorted(state["parts"].items()):
        f = root / folder
        if not f.is_dir() or not any(f.iterdir()):
            problems.append(f"part {part}: folder {f} is missing or empty")
    return problems
