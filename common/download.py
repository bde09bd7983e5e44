"""Streaming HTTP downloads that resume, verify and never leave a file that looks complete (stdlib ``urllib``).

* :func:`download` streams ``url`` to ``<dest>.part`` in 1 MiB chunks with a ``tqdm`` progress bar (size, rate,
  ETA) and renames it onto ``dest`` only when the size and checksum check out. A dropped connection resumes by
  itself with an HTTP ``Range: bytes=N-`` request (up to ``retries`` times, with backoff); an earlier
  ``.part`` left by a killed run is continued when ``resume=True`` and started over otherwise. A server that
  ignores ``Range`` (answers 200) restarts the file from byte 0.
* Checksums are ``"md5:<hex>"`` or ``"sha256:<hex>"`` (:func:`file_digest`). A mismatch deletes the bad file
  and raises a one-line :class:`common.cli.UserError` naming the file and what to do.
* HTTP 401/403/404 are one-line errors naming the file, the URL and what to do; other failures after the
  retries are one line too.
* :class:`LockFile`: where a host publishes no checksum, the size and sha256 of the first complete download
  are recorded in a JSON lock file and every later download or check must match them.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.atomic import atomic_write
from common.errors import UserError

CHUNK = 1 << 20
USER_AGENT = "landslide-detect-fetch/1 (+python urllib)"
#: What to do after an HTTP error status, by status.
HTTP_ADVICE: dict[int, str] = {
    401: "the host wants credentials: log in / set the token (HF_TOKEN for Hugging Face) and run again",
    403: "access refused: accept the dataset's terms on its page or check the token, then run again",
    404: "not found: the file was moved or renamed on the host; check --url or the dataset page",
}
_NETWORK_ERRORS = (urllib.error.URLError, HTTPException, ConnectionError, socket.timeout, TimeoutError)


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: ``name`` (relative path under the download folder), ``url``, ``size`` in bytes and
    ``checksum`` (``"md5:..."``/``"sha256:..."``) when known, and where the checksum came from."""

    name: str
    url: str
    size: int | None = None
    checksum: str | None = None
    checksum_source: str = ""


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """``"<algorithm>:<hex>"`` of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return f"{algorithm}:{h.hexdigest()}"


def check_file(path: Path, remote: RemoteFile) -> str | None:
    """``None`` when ``path`` has ``remote``'s size and checksum (those known), else what is wrong (one line)."""
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{path} has {size:,} bytes, expected {remote.size:,}"
    if remote.checksum:
        algorithm, _, expected = remote.checksum.partition(":")
        got = file_digest(path, algorithm).partition(":")[2]
        if got.lower() != expected.lower():
            src = f" ({remote.checksum_source})" if remote.checksum_source else ""
            return f"{path} has {algorithm} {got}, expected {expected}{src}"
    return None


def _request(url: str, headers: Mapping[str, str], offset: int, timeout: float) -> Any:
    """GET ``url``. ``Authorization`` goes to this host only, never along a redirect (a Hub file redirects to a
    pre-signed CDN URL, which refuses a second credential); ``Range`` follows redirects."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    for key, value in headers.items():
        if key.lower() == "authorization":
            req.add_unredirected_header(key, value)
        else:
            req.add_header(key, value)
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) URLs the user chose


def http_error(name: str, url: str, exc: urllib.error.HTTPError) -> UserError:
    """One line for an HTTP error status while fetching ``name``."""
    advice = HTTP_ADVICE.get(exc.code, "the host failed; try again later (add --resume to continue)")
    return UserError(f"{name}: HTTP {exc.code} {exc.reason} from {url}; {advice}")


def fetch_json(url: str, headers: Mapping[str, str] | None = None, timeout: float = 60.0) -> Any:
    """GET ``url`` and parse JSON; HTTP errors are one-line :class:`UserError` s."""
    try:
        with _request(url, headers or {}, 0, timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise http_error(url.rsplit("/", 1)[-1] or url, url, exc) from None
    except _NETWORK_ERRORS as exc:
        raise UserError(f"cannot reach {url}: {exc}; check the network or --url") from None
    except ValueError as exc:
        raise UserError(f"{url}: not JSON ({exc})") from None


def download(
    remote: RemoteFile,
    dest: str | os.PathLike[str],
    *,
    resume: bool = False,
    headers: Mapping[str, str] | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Fetch ``remote`` to ``dest`` (see the module docstring); returns ``dest``.

    A complete, verified ``dest`` is kept as it is (nothing is fetched). ``<dest>.part`` holds the bytes so
    far; it is continued when ``resume`` (else discarded) and after a dropped connection.
    """
    target = Path(dest)
    if target.exists() and check_file(target, remote) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if part.exists() and not resume:
        part.unlink()
    attempt = 0
    bar = tqdm(
        total=remote.size,
        initial=part.stat().st_size if part.exists() else 0,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=remote.name,
        disable=not progress,
        file=sys.stderr,
        mininterval=0.5,
    )
    try:
        while True:
            offset = part.stat().st_size if part.exists() else 0
            if remote.size is not None and offset == remote.size:
                break
            try:
                with _request(remote.url, headers or {}, offset, timeout) as resp:
                    status = getattr(resp, "status", 200)
                    if offset and status != 206:  # the server ignored Range: start over
                        offset = 0
                        bar.reset(total=remote.size)
                    length = resp.headers.get("Content-Length")
                    written = 0
                    with open(part, "ab" if offset else "wb") as fh:
                        for block in iter(lambda r=resp: r.read(CHUNK), b""):
                            fh.write(block)
                            written += len(block)
                            bar.update(len(block))
                    if length is not None and written < int(length):  # urllib returns b"" on a dropped connection
                        raise ConnectionError(f"connection closed after {written:,} of {int(length):,} bytes")
                got = part.stat().st_size
                if remote.size is not None and got < remote.size:
                    raise ConnectionError(f"connection closed at {got:,} of {remote.size:,} bytes")
                break
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and remote.size is not None and offset >= remote.size:
                    break
                if exc.code in HTTP_ADVICE or attempt >= retries:
                    raise http_error(remote.name, remote.url, exc) from None
            except _NETWORK_ERRORS as exc:
                if attempt >= retries:
                    raise UserError(
                        f"{remote.name}: download from {remote.url} failed after {retries} retries ({exc}); "
                        "run again with --resume to continue"
                    ) from None
            attempt += 1
            sleep(min(30.0, 0.5 * 2**attempt))
    finally:
        bar.close()
    problem = check_file(part, remote)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise UserError(
            f"{remote.name}: checksum or size mismatch ({problem}); the bad download was deleted: run again, and "
            "if it repeats the host's file changed or a proxy alters it (report it, or pass --url to a mirror)"
        )
    os.replace(part, target)
    return target


class LockFile:
    """Size and sha256 of the first complete download of each file (JSON ``{name: {size, sha256, url}}``).

    For hosts that publish no checksum: :meth:`check_or_record` records a file the first time and requires
    later copies to match, so a changed or corrupted file is noticed. The recorded values are *unverified*
    against the host: they only say "the same bytes as the first download".
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise UserError(f"lock file {self.path} is not valid JSON ({exc}); delete it to record anew") from None

    def expected(self, name: str) -> dict[str, Any] | None:
        return self.entries.get(name)

    def check_or_record(self, name: str, path: Path, url: str) -> str:
        """Record ``path`` under ``name`` (first time) or check it against the record; returns the sha256."""
        digest = file_digest(path, "sha256")
        size = path.stat().st_size
        entry = self.entries.get(name)
        if entry is None:
            self.entries[name] = {"size": size, "sha256": digest.partition(":")[2], "url": url}
            self.save()
        elif entry.get("size") != size or entry.get("sha256") != digest.partition(":")[2]:
            raise UserError(
                f"{name}: {path} ({size:,} bytes, {digest}) differs from the first download recorded in {self.path} "
                f"({entry.get('size'):,} bytes, sha256:{entry.get('sha256')}); delete the file and fetch again, or "
                f"remove its entry from the lock file if the host really changed it"
            )
        return digest

    def save(self) -> None:
        with atomic_write(self.path) as fh:
            json.dump(self.entries, fh, indent=2, sort_keys=True)
