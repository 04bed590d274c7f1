"""The recorder: HAR 1.2 validity, redaction, the API switch and shutdown."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from proxy.recorder import REDACTED, Capture, Recorder, Redactor, har_entry
from proxy.replay import har

from .conftest import PERSON_PASSWORD, PERSON_USER, SERVICE_PASSWORD, SERVICE_USER, basic, make_test_app

APP_PASSWORD = "abcd-efgh-ijkl-mnop"


def assert_valid_har(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The required fields of HAR 1.2 (log, creator, entries, request, response, content, timings)."""
    log = document["log"]
    assert log["version"] == "1.2"
    assert isinstance(log["creator"]["name"], str) and isinstance(log["creator"]["version"], str)
    for entry in log["entries"]:
        datetime.fromisoformat(entry["startedDateTime"])
        assert entry["time"] >= 0
        request, response = entry["request"], entry["response"]
        for key in ("method", "url", "httpVersion", "cookies", "headers", "queryString"):
            assert key in request, key
        assert request["headersSize"] == -1 and isinstance(request["bodySize"], int)
        for header in request["headers"] + response["headers"]:
            assert set(header) == {"name", "value"}
        if "postData" in request:
            assert {"mimeType", "text"} <= set(request["postData"])
        for key in ("status", "statusText", "httpVersion", "cookies", "headers", "redirectURL"):
            assert key in response, key
        assert {"size", "mimeType"} <= set(response["content"])
        assert "cache" in entry
        assert all(entry["timings"][key] >= 0 for key in ("send", "wait", "receive"))
    return log["entries"]


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_session_is_recorded_as_valid_har_with_secrets_redacted(har_path: Path) -> None:
    runner, base = await serve(make_test_app(har_path, secrets=("known-server-secret",)))
    try:
        async with aiohttp.ClientSession() as client:
            auth = basic(PERSON_USER, PERSON_PASSWORD)
            async with client.put(f"{base}/alice/cal/a.ics", data=b"BEGIN:VCALENDAR", headers=auth) as r:
                assert r.status == 200
            async with client.get(f"{base}/alice/", headers={**auth, "Cookie": "session=s3cr3t-cookie"}) as r:
                assert r.status == 200
            link = {"apple_id": "a@icloud.com", "app_password": APP_PASSWORD, "note": "known-server-secret"}
            async with client.post(f"{base}/api/v1/links", json=link, headers=auth) as r:
                assert r.status == 200
            async with client.post(f"{base}/api/v1/notes", data=f"pw is {APP_PASSWORD}", headers=auth) as r:
                assert r.status in (200, 500)
            async with client.get(f"{base}/binary", headers=auth) as r:
                assert await r.read() == bytes(range(256))
            async with client.get(f"{base}/missing", headers=auth) as r:
                assert r.status == 404
            async with client.get(f"{base}/stream", headers=auth) as r:
                assert await r.read() == b"streamed"
            async with client.get(f"{base}/search?q=1&password=hunter22x", headers=auth) as r:
                assert r.status == 200
            async with client.get(f"{base}/alice/") as r:  # a client probing without credentials
                assert r.status == 401
    finally:
        await runner.cleanup()

    text = har_path.read_text(encoding="utf-8")
    entries = assert_valid_har(json.loads(text))
    for secret in (
        PERSON_PASSWORD,
        APP_PASSWORD,
        "known-server-secret",
        "s3cr3t-cookie",
        "hunter22x",
        base64.b64encode(f"{PERSON_USER}:{PERSON_PASSWORD}".encode()).decode(),
    ):
        assert secret not in text, secret
    methods = [(entry["request"]["method"], entry["response"]["status"]) for entry in entries]
    assert methods == [
        ("PUT", 200),
        ("GET", 200),
        ("POST", 200),
        ("POST", 500),
        ("GET", 200),
        ("GET", 404),
        ("GET", 200),
        ("GET", 200),
        ("GET", 401),
    ]
    put, get, link_entry, _, binary, missing, stream, search, probe = entries
    assert put["request"]["postData"]["text"] == "BEGIN:VCALENDAR"
    assert {"name": "Authorization", "value": REDACTED} in put["request"]["headers"]
    assert {"name": "Cookie", "value": REDACTED} in get["request"]["headers"]
    sent = json.loads(link_entry["request"]["postData"]["text"])
    assert sent == {"apple_id": "a@icloud.com", "app_password": REDACTED, "note": REDACTED}
    assert json.loads(link_entry["response"]["content"]["text"])["received"]["app_password"] == REDACTED
    assert binary["response"]["content"]["encoding"] == "base64"
    assert base64.b64decode(binary["response"]["content"]["text"]) == bytes(range(256))
    assert missing["response"]["content"]["text"] == "no such thing"
    assert stream["response"]["content"][har.NOT_CAPTURED] is True
    assert {"name": "password", "value": REDACTED} in search["request"]["queryString"]
    assert all(h["name"] != "Authorization" for h in probe["request"]["headers"])


def test_recorder_file_is_valid_har_after_every_write(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "grow.har")
    recorder.open()
    try:
        assert assert_valid_har(json.loads(recorder.path.read_text())) == []
        for number in range(1, 4):
            recorder.record(capture(f"/item/{number}"))
            for _ in range(400):  # the writer thread appends soon; poll without a deadline of its own
                if recorder.entries_written == number:
                    break
                time.sleep(0.005)
            entries = assert_valid_har(json.loads(recorder.path.read_text()))
            assert [entry["request"]["url"] for entry in entries][-1].endswith(f"/item/{number}")
    finally:
        recorder.close()
    assert len(assert_valid_har(json.loads(recorder.path.read_text()))) == 3


def capture(path: str, body: bytes = b"") -> Capture:
    return Capture(
        started=datetime.now(UTC),
        method="PUT",
        url=f"http://127.0.0.1:5232{path}",
        http_version="HTTP/1.1",
        request_headers=[("Content-Type", "text/calendar")],
        request_body=body,
        status=201,
        reason="Created",
        response_headers=[],
        response_body=b"",
        send_ms=0.1,
        wait_ms=1.0,
    )


def test_learnt_basic_password_is_scrubbed_from_later_bodies() -> None:
    redactor = Redactor()
    header = basic(PERSON_USER, "a-long-password")["Authorization"]
    first = dataclasses.replace(
        capture("/alice/a.ics", b"DESCRIPTION:my password is a-long-password"),
        request_headers=[("Authorization", header)],
    )
    entry = har_entry(first, redactor)
    assert "a-long-password" not in json.dumps(entry)
    later = har_entry(capture("/alice/b.ics", b"echo a-long-password"), redactor)
    assert later["request"]["postData"]["text"] == f"echo {REDACTED}"


def test_app_password_shape_only_scrubbed_in_api_bodies() -> None:
    redactor = Redactor()
    caldav = har_entry(capture("/alice/a.ics", b"UID:abcd-efgh-ijkl-mnop"), redactor)
    assert caldav["request"]["postData"]["text"] == "UID:abcd-efgh-ijkl-mnop"  # a UID, not a password
    api = har_entry(capture("/api/v1/links/x", b'{"comment": "abcd-efgh-ijkl-mnop"}'), redactor)
    assert "abcd-efgh-ijkl-mnop" not in api["request"]["postData"]["text"]


async def test_recording_api_switch(tmp_path: Path) -> None:
    runner, base = await serve(make_test_app(None, folder=tmp_path))
    target = tmp_path / "via-api.har"
    service = basic(SERVICE_USER, SERVICE_PASSWORD)
    try:
        async with aiohttp.ClientSession() as client:
            url = f"{base}/api/v1/recording"
            async with client.post(
                url,
                json={"action": "start", "path": str(target)},
                headers=basic(PERSON_USER, PERSON_PASSWORD),
            ) as r:
                assert r.status == 403
                assert "service account" in (await r.json())["error"]["message"]
            async with client.get(url, headers=service) as r:
                assert await r.json() == {"active": False, "path": None, "entries": 0}
            async with client.post(url, json={"action": "start", "path": "/etc/elsewhere.har"}, headers=service) as r:
                assert r.status == 400
            async with client.post(url, json={"action": "start", "path": str(target)}, headers=service) as r:
                assert r.status == 200 and (await r.json())["active"] is True
            async with client.post(url, json={"action": "start", "path": str(target)}, headers=service) as r:
                assert r.status == 409
            async with client.get(f"{base}/alice/x", headers=service) as r:
                assert r.status == 200
            async with client.post(url, json={"action": "stop"}, headers=service) as r:
                assert await r.json() == {"active": False, "path": str(target), "entries": 1}
            async with client.post(url, json={"action": "stop"}, headers=service) as r:
                assert r.status == 409
            async with client.post(url, json={"action": "pause"}, headers=service) as r:
                assert r.status == 400
            async with client.get(f"{base}/alice/y", headers=service) as r:  # not recording any more
                assert r.status == 200
    finally:
        await runner.cleanup()
    entries = assert_valid_har(json.loads(target.read_text()))
    assert [entry["request"]["url"] for entry in entries] == [f"{base}/alice/x"]


async def test_clean_shutdown_loses_no_entries(har_path: Path) -> None:
    runner, base = await serve(make_test_app(har_path))
    async with aiohttp.ClientSession() as client:

        async def one(number: int) -> None:
            headers = basic(PERSON_USER, PERSON_PASSWORD)
            async with client.put(f"{base}/alice/{number}.ics", data=b"x" * number, headers=headers) as r:
                assert r.status == 200

        await asyncio.gather(*(one(number) for number in range(200)))
    await runner.cleanup()
    entries = assert_valid_har(json.loads(har_path.read_text()))
    assert sorted(entry["request"]["bodySize"] for entry in entries) == list(range(200))
