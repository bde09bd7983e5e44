"""A minimal STAC API served on 127.0.0.1 from saved JSON, for the real pystac-client search path.

Endpoints: ``/`` (landing page with item-search conformance), ``/collections``, ``/collections/<id>``,
``/search`` (GET and POST: ``collections``, ``bbox`` by footprint intersection, ``datetime`` range, ``limit``).
``status`` other than 200 answers every request with that HTTP status (the error case).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import shapely

CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
]


class StacServer:
    """``with StacServer({"sentinel-2-l2a": [item, ...]}) as url: ...``"""

    def __init__(self, collections: dict[str, list[dict[str, Any]]], status: int = 200) -> None:
        self.collections = collections
        self.status = status
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                return

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                self._route(url.path, q)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                self._route(urlparse(self.path).path, body)

            def _route(self, path: str, params: dict[str, Any]) -> None:
                server.requests.append(path)
                if server.status != 200:
                    return self._send(server.status, {"code": "ServerError", "description": "test failure"})
                base = server.url
                if path in ("", "/"):
                    return self._send(200, server.landing())
                if path == "/collections":
                    return self._send(200, {"collections": [server.collection(c) for c in server.collections]})
                if path.startswith("/collections/"):
                    cid = path.split("/")[2]
                    if cid in server.collections:
                        return self._send(200, server.collection(cid))
                    return self._send(404, {"code": "NotFound", "description": cid})
                if path == "/search":
                    return self._send(
                        200,
                        {
                            "type": "FeatureCollection",
                            "features": server.search(params),
                            "links": [{"rel": "root", "href": base}],
                        },
                    )
                return self._send(404, {"code": "NotFound", "description": path})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def landing(self) -> dict[str, Any]:
        u = self.url
        return {
            "type": "Catalog",
            "id": "test-stac",
            "stac_version": "1.0.0",
            "description": "test",
            "conformsTo": CONFORMS,
            "links": [
                {"rel": "self", "href": u, "type": "application/json"},
                {"rel": "root", "href": u, "type": "application/json"},
                {"rel": "data", "href": f"{u}/collections", "type": "application/json"},
                {"rel": "search", "href": f"{u}/search", "type": "application/geo+json", "method": "GET"},
                {"rel": "search", "href": f"{u}/search", "type": "application/geo+json", "method": "POST"},
            ],
        }

    def collection(self, cid: str) -> dict[str, Any]:
        return {
            "type": "Collection",
            "id": cid,
            "stac_version": "1.0.0",
            "description": cid,
            "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            "links": [{"rel": "root", "href": self.url}],
        }

    def search(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        cols = params.get("collections") or list(self.collections)
        if isinstance(cols, str):
            cols = cols.split(",")
        bbox = params.get("bbox")
        if isinstance(bbox, str):
            bbox = [float(v) for v in bbox.split(",")]
        dtr = params.get("datetime")
        out = []
        for cid in cols:
            for item in self.collections.get(cid, []):
                if bbox and not shapely.intersects(shapely.geometry.shape(item["geometry"]), shapely.box(*bbox)):
                    continue
                if dtr:
                    lo, hi = (dtr.split("/") + [""])[:2]
                    day = item["properties"].get("datetime", "")
                    if (lo and lo != ".." and day < lo) or (hi and hi != ".." and day > hi):
                        continue
                out.append(item)
        limit = int(params.get("limit") or 10_000)
        return out[:limit]

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
