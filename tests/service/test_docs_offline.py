"""``/docs`` and ``/redoc`` open offline: every script, style sheet and icon they load is served by the app
(from the ``fastapi-offline`` package), none from a CDN; ``/openapi.json`` stays."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import ServiceConfig
from tests.service.helpers import FakeAssessor


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_nothing_from_outside(tmp_path: Path, models, page: str) -> None:
    config = ServiceConfig(workdir=str(tmp_path / "jobs"))
    client = TestClient(create_app(config, models=models, assessor=FakeAssessor(config)))
    html = client.get(page)
    assert html.status_code == 200
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html.text, re.IGNORECASE), "an external URL"
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""", html.text)
    urls = [a or b for a, b in urls]
    assert any(u.endswith(".js") for u in urls), urls
    for url in urls:
        assert url.startswith("/"), url
        assert client.get(url).status_code == 200, url
    if page == "/docs":
        assert '"validatorUrl": null' in html.text  # no badge fetched from the online validator
        assert "/openapi.json" in urls
    schema = client.get("/openapi.json").json()
    assert "/v1/assess" in schema["paths"]
