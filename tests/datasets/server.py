"""A local HTTP file server for the download tests: honours ``Range``, can throttle, drop a connection or
answer an error status, and records every request (path, Range, Authorization)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Routes:
    """What the server serves: ``files`` path -> bytes; ``status`` path -> error code; ``drop_after`` path ->
    bytes sent before the connection is cut (first request only); ``throttle`` seconds per 16 KiB."""

    files: dict[str, bytes] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)
    throttle: float = 0.0
    redirects: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, str | None]] = field(default_factory=list)


def _handler(routes: Routes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path
            routes.requests.append(
                {"path": path, "range": self.headers.get("Range"), "auth": self.headers.get("Authorization")}
            )
            if path in routes.status:
                self.send_response(routes.status[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path in routes.redirects:
                self.send_response(302)
                self.send_header("Location", routes.redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = routes.files.get(path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = 0, len(body) - 1
            match = _RANGE.match(self.headers.get("Range") or "")
            if match:
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else end
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            chunk = body[start : end + 1]
            cut = routes.drop_after.pop(path, None)
            if cut is not None:
                self.wfile.write(chunk[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            step = 16 * 1024
            for i in range(0, len(chunk), step):
                try:
                    self.wfile.write(chunk[i : i + step])
                except (BrokenPipeError, ConnectionResetError):
                    return
                if routes.throttle:
                    time.sleep(routes.throttle)

    return Handler


@contextmanager
def serve(routes: Routes) -> Iterator[str]:
    """Serve ``routes`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(routes))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
