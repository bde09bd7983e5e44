"""Atomic outputs: write to a temporary name beside the target, then rename.

A crash or an exception while writing never leaves a half-written output behind, and the temporary
file or folder is removed. When the machine refuses the write (a read-only folder, a full disk, no
permission, a quota), the error becomes one :class:`common.cli.UserError` line naming the target and
the cause, instead of a traceback from deep inside a writer (h5py, torch, matplotlib, pandas).

* :func:`atomic_path` / :func:`atomic_write`: one file.
* :func:`atomic_dir`: a folder of outputs, published all together (files already in the target folder
  stay; the new ones appear only when every one of them was written).
* Modes: files and folders published here get the modes plainly created ones would (``0o666`` / ``0o777``
  less the umask), not ``tempfile``'s owner-only ones, so colleagues on a shared drive can read outputs.
* :func:`check_free_space`: refuse before writing ``n`` bytes to a disk that cannot hold them.
* :func:`clean_stale_staging`: remove the hidden staging files/folders a killed process (SIGKILL, power
  loss) left behind. Staging names carry the writer's pid and host (``.<name>.p<pid>@<host>.<random>.tmp``);
  a staging entry is stale when it was made on this host and its process is gone. The first write of a
  process into a folder removes that folder's stale staging; ``python -m pipelines.clean`` does a whole
  tree on demand.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from common.errors import UserError

#: ``OSError`` numbers that mean "the machine refuses this write" (not a bug).
WRITE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG})


def write_error(target: str | os.PathLike[str], exc: OSError) -> UserError:
    """A one-line :class:`UserError` for a refused write of ``target``."""
    cause = exc.strerror or os.strerror(exc.errno or 0) or type(exc).__name__
    return UserError(f"cannot write {target}: {cause} (errno {exc.errno})")


def _is_write_refusal(exc: BaseException | None) -> bool:
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


def _refusal(folder: Path, exc: BaseException) -> OSError | None:
    """The ``OSError`` behind a failed write, also when a writer wrapped it (torch raises ``RuntimeError``
    for a full disk): the exception itself, its cause, or what the folder says (read-only, full)."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        if _is_write_refusal(candidate):
            return candidate  # type: ignore[return-value]
    if isinstance(exc, UserError | KeyboardInterrupt):
        return None
    try:
        if not os.access(folder, os.W_OK):
            return OSError(errno.EROFS, "read-only or not writable")
        if shutil.disk_usage(folder).free < (1 << 20):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        return None
    return None


def host_tag() -> str:
    """This machine's host name, reduced to ``[A-Za-z0-9_-]`` (at most 32 characters) for staging names."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"


def staging_prefix(name: str) -> str:
    """The prefix of this process's staging entries for target ``name``: ``.<name>.p<pid>@<host>.``. Writers
    that stage outside :func:`atomic_path` (a streamed raster, say) use it too, so a killed run's leftovers
    are recognised; call :func:`clean_stale_folder` before."""
    return f".{name}.p{os.getpid()}@{host_tag()}."


#: A staging entry: ``.<name>.p<pid>@<host>.<random>.<kind>`` (``tmp[<suffix>]``, ``old`` for a folder moved
#: aside, ``part.tif`` for a streamed raster).
_STAGING = re.compile(r"^\.(?P<name>.+)\.p(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]+)\.[^.]+\..+$")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (``os.kill(pid, 0)``; another user's process counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True  # unsure: treat as alive, never remove a live writer's files
    return True


def stale_staging(folder: str | os.PathLike[str], name: str | None = None, *, recursive: bool = False) -> list[Path]:
    """Staging entries in ``folder`` (of target ``name`` only, when given) whose writer process is gone.

    Only entries made on this host are judged (another machine's pid means nothing here); entries of a
    live process, and hidden files of other programs, are never listed.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    here = host_tag()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in sorted([*dirnames, *filenames]):
            m = _STAGING.match(entry)
            if m is None or m["host"] != here or (name is not None and m["name"] != name):
                continue
            if not pid_alive(int(m["pid"])):
                found.append(Path(dirpath) / entry)
        # never descend into hidden folders (staging folders, .git, a .venv): recursion is for output trees
        dirnames[:] = sorted(d for d in dirnames if recursive and not d.startswith("."))
    return found


def clean_stale_staging(
    folder: str | os.PathLike[str], name: str | None = None, *, recursive: bool = False, dry_run: bool = False
) -> list[Path]:
    """Remove (unless ``dry_run``) the stale staging entries :func:`stale_staging` lists; returns them."""
    found = stale_staging(folder, name, recursive=recursive)
    if not dry_run:
        for entry in found:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
    return found


#: Folders whose stale staging this process already removed (each is scanned once per process).
_CLEANED: set[str] = set()


def clean_stale_folder(folder: Path) -> None:
    """Remove the stale staging of ``folder`` the first time this process writes there (one listing per
    folder and process, so writing many files into one folder stays linear)."""
    key = os.path.abspath(folder)
    if key in _CLEANED:
        return
    _CLEANED.add(key)
    with contextlib.suppress(OSError):
        clean_stale_staging(folder)


def current_umask() -> int:
    """The process's umask: from ``/proc/self/status`` where Linux has it (no race with other threads),
    else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plainly created file gets (``0o666`` less the umask): what files renamed into place get,
    since ``mkstemp`` makes them owner-only (colleagues on a shared drive could not read them)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode a plainly created folder gets (``0o777`` less the umask): what staging folders published by
    :func:`atomic_dir` get, since ``mkdtemp`` makes them owner-only."""
    return 0o777 & ~current_umask()


#: The file mode under the umask at import (kept for callers; :func:`file_mode` reads the umask in force).
FILE_MODE = file_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    Use this with writers that take a path (``h5py.File``, ``fig.savefig``, ``torch.save``,
    ``np.save``). The temporary file keeps the target's suffix (or ``suffix``) so that
    writers choosing a format by extension still work. On an exception the temporary
    file is removed and ``path`` is left untouched; a refused write (read-only, disk full) is
    re-raised as a one-line :class:`UserError` naming ``path``.
    """
    target = Path(path)
    sfx = target.suffix if suffix is None else suffix
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_folder(target.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=staging_prefix(target.name), suffix=f".tmp{sfx}", dir=target.parent)
    except OSError as exc:
        if _is_write_refusal(exc):
            raise write_error(target, exc) from exc
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        refused = _refusal(target.parent, exc)
        if refused is not None:
            raise write_error(target, refused) from exc
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; rename it onto ``path`` when the block succeeds.

    ``mode`` is ``"w"`` (text, UTF-8 by default) or ``"wb"``.
    """
    if mode not in {"w", "wb"}:
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
        open_kwargs.setdefault("newline", "")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as fh:
        yield fh


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move its files into ``path`` when the block succeeds.

    Files already in ``path`` are kept (those with the same names are replaced); with ``replace`` the
    finished folder takes the place of ``path`` whole, by rename (a dataset folder, say, whose old part
    files must not survive). On an exception the temporary folder and everything in it are removed and
    ``path`` is left as it was. A write the machine refuses (read-only, disk full) is a one-line
    :class:`UserError` naming ``path``.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UserError(f"{target}: exists and is not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_folder(target.parent)
        tmp = Path(tempfile.mkdtemp(prefix=staging_prefix(target.name), suffix=".tmp", dir=target.parent))
        os.chmod(tmp, dir_mode())  # mkdtemp's 0700 would survive the rename of replace=True
    except OSError as exc:
        if _is_write_refusal(exc):
            raise write_error(target, exc) from exc
        raise
    try:
        yield tmp
        if replace:
            _swap_in(tmp, target)
        else:
            _move_into(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        refused = _refusal(target.parent, exc)
        if refused is not None:
            raise write_error(target, refused) from exc
        if isinstance(exc, UserError) and str(tmp) in str(exc):  # a writer named the hidden staging folder
            raise UserError(str(exc).replace(str(tmp), str(target))) from exc
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def _move_into(tmp: Path, target: Path) -> None:
    """Move every file of ``tmp`` into ``target`` (created), keeping ``target``'s other files."""
    target.mkdir(exist_ok=True)
    for item in sorted(tmp.rglob("*")):
        dest = target / item.relative_to(tmp)
        if item.is_dir():
            dest.mkdir(exist_ok=True)
        else:
            os.replace(item, dest)


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is moved aside first and removed after."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=staging_prefix(target.name), suffix=".old", dir=target.parent))
    os.replace(target, old / "d")
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def check_free_space(folder: str | os.PathLike[str], n_bytes: int, *, what: str = "the output") -> None:
    """Raise :class:`UserError` when the disk holding ``folder`` has less than ``n_bytes`` (+1%) free.

    Call it before writing a file whose size is known in advance (a memory-mapped write to a full
    disk ends in SIGBUS, which no ``try`` can catch).
    """
    probe = Path(folder)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = int(n_bytes * 1.01) + (1 << 20)
    if free < need:
        raise UserError(
            f"not enough free space for {what} in {folder}: needs {need / 1e6:,.1f} MB, {free / 1e6:,.1f} MB free"
        )
