"""Fixtures of the recorder tests: a small aiohttp app of our own with the recorder and a stand-in for the
authentication middleware (the real one needs a users file and bcrypt, which these tests are not about)."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from proxy.auth import PRINCIPAL_REQUEST_KEY, Principal, parse_basic
from proxy.recorder import recorder_middleware, setup_recorder

SERVICE_USER, SERVICE_PASSWORD = "crm", "crm-service-pass-1"
PERSON_USER, PERSON_PASSWORD = "alice", "alice-pass-2"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@web.middleware
async def stand_in_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    credentials = parse_basic(request.headers.get("Authorization", ""))
    accounts = {SERVICE_USER: (SERVICE_PASSWORD, True), PERSON_USER: (PERSON_PASSWORD, False)}
    if credentials is None or accounts.get(credentials[0], ("",))[0] != credentials[1]:
        return web.Response(status=401, text="who are you?", headers={"WWW-Authenticate": 'Basic realm="t"'})
    request[PRINCIPAL_REQUEST_KEY] = Principal(credentials[0], accounts[credentials[0]][1])
    return await handler(request)


async def handle(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if request.path == "/missing":
        raise web.HTTPNotFound(text="no such thing")
    if request.path == "/stream":
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"streamed")
        return response
    if request.path == "/binary":
        return web.Response(body=bytes(range(256)), content_type="application/octet-stream")
    if request.path.startswith("/api/"):
        document: Any = json.loads(body or b"{}")
        return web.json_response({"received": document, "id": 7})
    return web.Response(body=body or b"hello", content_type="text/plain", headers={"ETag": '"e-1"'})


def make_test_app(
    path: Path | None, secrets: tuple[str, ...] = (), folder: Path | None = None
) -> web.Application:
    app = web.Application(middlewares=[recorder_middleware, stand_in_auth])
    setup_recorder(app, path, secrets=secrets, folder=folder)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.fixture
def har_path(tmp_path: Path) -> Path:
    return tmp_path / "session.har"
