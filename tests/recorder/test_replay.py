"""Replay against small servers of our own: variables, exit statuses, --only and --stop-on-first."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.cli import main
from proxy.recorder import recorder_middleware, setup_recorder

from .test_recorder import serve

SYNC = """<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">{responses}<D:sync-token>{token}</D:sync-token>
</D:multistatus>"""
RESPONSE = (
    "<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:getetag>{etag}</D:getetag></D:prop>"
    "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
)


def store_app(har_path: Path | None = None, *, break_summary: bool = False) -> web.Application:
    """A toy CalDAV-ish store whose ETags and sync tokens are random per server, as real ones may be."""
    items: dict[str, tuple[bytes, str]] = {}
    tokens: list[str] = [f"urn:sync:{uuid.uuid4()}"]

    async def handle(request: web.Request) -> web.Response:
        path = request.path
        if request.method == "PUT":
            current = items.get(path)
            if_match = request.headers.get("If-Match")
            if if_match is not None and (current is None or current[1] != if_match):
                return web.Response(status=412, text="precondition failed")
            etag = f'"{uuid.uuid4().hex}"'
            items[path] = (await request.read(), etag)
            tokens.append(f"urn:sync:{uuid.uuid4()}")
            return web.Response(status=204 if current else 201, headers={"ETag": etag})
        if request.method == "GET":
            if path not in items:
                return web.Response(status=404, text=f"nothing at {path}")
            body, etag = items[path]
            if break_summary:
                body = body.replace(b"SUMMARY:Intro", b"SUMMARY:Outro")
            return web.Response(body=body, headers={"ETag": etag, "Content-Type": "text/calendar"})
        if request.method == "REPORT":
            since = (await request.read()).decode()
            if since and since not in tokens:
                return web.Response(status=403, text="invalid sync token")
            responses = "".join(
                RESPONSE.format(href=f"http://{request.host}{href}", etag=etag)
                for href, (_, etag) in sorted(items.items())
            )
            body = SYNC.format(responses=responses, token=tokens[-1])
            return web.Response(body=body.encode(), content_type="application/xml")
        return web.Response(status=405)

    app = web.Application(middlewares=[recorder_middleware])
    setup_recorder(app, har_path)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


EVENT = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1\r\nDTSTAMP:20240101T000000Z\r\n"
    b"DTSTART:20300101T100000Z\r\nSUMMARY:Intro\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


async def session(base: str) -> None:
    """Create, read, list, update with If-Match (the ETag received), and sync since the token received."""
    async with aiohttp.ClientSession() as client:
        async with client.put(f"{base}/cal/1.ics", data=EVENT, headers={"Content-Type": "text/calendar"}) as r:
            etag = r.headers["ETag"]
        async with client.get(f"{base}/cal/1.ics") as r:
            assert r.status == 200
        async with client.request("REPORT", f"{base}/cal/", data=b"") as r:
            token = (await r.text()).split("<D:sync-token>")[1].split("<")[0]
        changed = EVENT.replace(b"DTSTART:20300101T100000Z", b"DTSTART:20300101T110000Z")
        async with client.put(f"{base}/cal/1.ics", data=changed, headers={"If-Match": etag}) as r:
            assert r.status == 204
        async with client.request("REPORT", f"{base}/cal/", data=token.encode()) as r:
            assert r.status == 200
        async with client.get(f"{base}/cal/missing.ics") as r:
            assert r.status == 404


@pytest.fixture
async def recording(tmp_path: Path) -> Path:
    path = tmp_path / "store.har"
    runner, base = await serve(store_app(path))
    try:
        await session(base)
    finally:
        await runner.cleanup()
    return path


@pytest.fixture
def stdin_password(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    yield


async def replay_cli(*args: str) -> int:
    """``calrelay replay`` in a thread: it runs its own event loop, as on the command line."""
    return await asyncio.to_thread(main, ["replay", *args])


async def test_replay_against_fresh_server_matches(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner, base = await serve(store_app())
    try:
        status = await replay_cli(str(recording), "--target", base, "-v")
    finally:
        await runner.cleanup()
    out = capsys.readouterr().out
    assert status == 0, out
    assert "6 of 6 replayed requests matched" in out
    assert "#4 PUT /cal/1.ics (recorded 204, got 204): ok" in out  # If-Match carried the new ETag


async def test_replay_reports_changed_body(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner, base = await serve(store_app(break_summary=True))
    try:
        status = await replay_cli(str(recording), "--target", base)
    finally:
        await runner.cleanup()
    out = capsys.readouterr().out
    assert status == 1
    assert "#2 GET /cal/1.ics (recorded 200, got 200): DIFFERS" in out
    assert "body VCALENDAR/VEVENT[uid=1]/SUMMARY: expected 'Intro', got 'Outro'" in out
    assert "5 of 6 replayed requests matched, 1 differed" in out


async def test_only_and_stop_on_first(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for options in (["--only", "put,report"], ["--stop-on-first"]):
        runner, base = await serve(store_app(break_summary=True))  # a fresh store for each replay
        try:
            await replay_cli(str(recording), "--target", base, *options)
        finally:
            await runner.cleanup()
        outputs.append(capsys.readouterr().out)
    only_out, stop_out = outputs
    assert "4 of 4 replayed requests matched" in only_out and "filtered by --only" in only_out
    assert "1 of 2 replayed requests matched" in stop_out and "stopped at the first difference" in stop_out


async def test_bad_input_exits_2(tmp_path: Path, recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_har = tmp_path / "not.har"
    not_har.write_text(json.dumps({"entries": []}))
    assert await replay_cli(str(not_har), "--target", "http://127.0.0.1:1") == 2
    assert "no top-level 'log'" in capsys.readouterr().err
    assert await replay_cli(str(tmp_path / "absent.har"), "--target", "http://127.0.0.1:1") == 2
    assert await replay_cli(str(recording), "--target", "ftp://x") == 2
    # A port nobody listens on: bind one, then close it.
    runner, base = await serve(web.Application())
    await runner.cleanup()
    assert await replay_cli(str(recording), "--target", base) == 2
    assert "cannot connect" in capsys.readouterr().err


async def test_replay_authenticates_where_the_recording_did(
    tmp_path: Path, stdin_password: None, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    plain = [{"name": "Content-Type", "value": "text/plain; charset=utf-8"}]
    har = {
        "log": {
            "version": "1.2",
            "creator": {"name": "t", "version": "1"},
            "entries": [
                {
                    "request": {"method": "GET", "url": f"http://old:1/{name}", "headers": headers},
                    "response": {"status": 200, "headers": plain, "content": {"text": "ok"}},
                }
                for name, headers in (("anon", []), ("authed", [{"name": "Authorization", "value": "[REDACTED]"}]))
            ],
        }
    }
    path = tmp_path / "auth.har"
    path.write_text(json.dumps(har))
    runner, base = await serve(app)
    try:
        assert await replay_cli(str(path), "--target", base, "--user", "u", "--password-stdin") == 0, (
            capsys.readouterr().out
        )
    finally:
        await runner.cleanup()
    assert seen == [None, aiohttp.encode_basic_auth("u", "pw")]
