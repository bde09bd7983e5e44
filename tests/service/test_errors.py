"""service.errors: one table from an exception to its HTTP status."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from starlette.exceptions import HTTPException

from common.errors import InputNotFoundError, UserError
from service.errors import ApiError, install_error_handlers, status_of


def test_status_table() -> None:
    assert status_of(ApiError(413, "too big")) == 413
    assert status_of(RequestValidationError([])) == 422
    assert status_of(HTTPException(405)) == 405
    assert status_of(UserError("bad")) == 400 and status_of(InputNotFoundError("gone")) == 400
    assert status_of(KeyError("bug")) == 500


def test_handlers_answer_one_line_json() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/user")
    def user() -> None:
        raise UserError("region 3: bounds\noutside lon/lat ranges")

    @app.get("/bug")
    def bug() -> None:
        raise KeyError("secret detail")

    client = TestClient(app, raise_server_exceptions=False)
    r = client.get("/user")
    assert r.status_code == 400 and r.json() == {"error": "region 3: bounds outside lon/lat ranges"}
    r = client.get("/bug")
    assert r.status_code == 500 and r.json() == {"error": "internal error (KeyError)"} and "secret" not in r.text
    assert client.get("/nope").status_code == 404
