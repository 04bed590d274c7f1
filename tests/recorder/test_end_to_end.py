"""Record a CRM session against calrelay, then replay it: against a fresh calrelay, a calrelay whose behaviour
was changed, and a plain Radicale standalone server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import web

from proxy.cli import main
from proxy.recorder import RECORDING
from proxy.replay import har
from proxy.replay.compare import DiffKind
from proxy.replay.runner import Target, replay
from tests.helpers import plain_radicale

from . import crm_session

SERVICE = "crm"


@pytest.fixture
def recorded(calrelay_factory: Callable[..., object], tmp_path: Path) -> Path:
    """A CRM session recorded against calrelay."""
    path = tmp_path / "crm.har"
    server = calrelay_factory(overrides={"recorder": {"path": str(path)}})  # as `serve --record` does
    crm_session.run(server.url, SERVICE, server.password(SERVICE), "alice")
    server.run(server.app[RECORDING].stop())
    return path


def replay_cli(path: Path, url: str, password: str, monkeypatch: pytest.MonkeyPatch, *options: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    return main(["replay", str(path), "--target", url, "--user", SERVICE, "--password-stdin", *options])


def test_recording_holds_the_whole_session_and_no_secret(recorded: Path, calrelay_factory) -> None:
    text = recorded.read_text(encoding="utf-8")
    exchanges = har.load(recorded)
    methods = {exchange.method for exchange in exchanges}
    assert {"PROPFIND", "MKCALENDAR", "PROPPATCH", "PUT", "REPORT", "DELETE", "GET"} <= methods
    assert any(b"sync-collection" in exchange.request.body for exchange in exchanges)
    assert any(b"time-range" in exchange.request.body for exchange in exchanges)
    assert any(b"round-robin" in exchange.request.body for exchange in exchanges)
    assert any(b"Intro call" in exchange.response.body for exchange in exchanges)  # decoded, not gzip
    password = "crm-secret"
    for secret in (password, base64.b64encode(f"{SERVICE}:{password}".encode()).decode()):
        assert secret not in text


def test_replay_against_fresh_calrelay_matches(
    recorded: Path, calrelay_factory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = calrelay_factory()
    assert replay_cli(recorded, fresh.url, fresh.password(SERVICE), monkeypatch) == 0, capsys.readouterr().out


@web.middleware
async def reschedule_intro(request: web.Request, handler) -> web.StreamResponse:
    """A behaviour change: events read back say another summary than was written."""
    response = await handler(request)
    if isinstance(response, web.Response) and response.body and b"Intro call" in _plain(response):
        response.body = _plain(response).replace(b"SUMMARY:Intro call", b"SUMMARY:Intro kall")
        response.headers.pop("Content-Encoding", None)
    return response


def _plain(response: web.Response) -> bytes:
    body = bytes(response.body)  # type: ignore[arg-type]
    return gzip.decompress(body) if response.headers.get("Content-Encoding") == "gzip" else body


@web.middleware
async def refuse_delete(request: web.Request, handler) -> web.StreamResponse:
    """A behaviour change: DELETE is refused."""
    if request.method == "DELETE":
        return web.Response(status=403, text="no deleting today")
    return await handler(request)


def test_replay_against_changed_calrelay_names_request_and_difference(
    recorded: Path, calrelay_factory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = calrelay_factory(customize=lambda app: app.middlewares.append(reschedule_intro))
    assert replay_cli(recorded, changed.url, changed.password(SERVICE), monkeypatch) == 1
    out = capsys.readouterr().out
    assert "GET /alice/bookings/appt-intro.ics (recorded 200, got 200): DIFFERS" in out
    assert "VEVENT[uid=appt-intro]/SUMMARY: expected 'Intro call', got 'Intro kall'" in out
    assert "REPORT /alice/bookings/ (recorded 207, got 207): DIFFERS" in out  # calendar-data in the REPORT

    refusing = calrelay_factory(customize=lambda app: app.middlewares.append(refuse_delete))
    assert replay_cli(recorded, refusing.url, refusing.password(SERVICE), monkeypatch, "--stop-on-first") == 1
    out = capsys.readouterr().out
    assert "DELETE /alice/bookings/blocked-lunch.ics (recorded 200, got 403): DIFFERS" in out
    assert "status: expected '200', got '403'" in out
    assert "stopped at the first difference" in out


@pytest.fixture
def radicale(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Start plain Radicale standalone servers (htpasswd users alice and crm) with the given rights type."""
    users = tmp_path / "radicale-users"
    users.write_text(f"alice:alice-secret\n{SERVICE}:crm-secret\n")
    with contextlib.ExitStack() as stack:

        def start(rights: str) -> str:
            url = stack.enter_context(plain_radicale(tmp_path, (
                f"[auth]\ntype = htpasswd\nhtpasswd_filename = {users}\nhtpasswd_encryption = plain\n"
                # delay = 0: Radicale otherwise holds back every 401/403 by a second.
                f"delay = 0\n[rights]\ntype = {rights}\n"
            )))
            # Radicale creates a principal's home on that user's first request; calrelay has alice's already.
            requests.request("PROPFIND", url, auth=("alice", "alice-secret"), timeout=10).raise_for_status()
            return url

        yield start


def test_replay_against_plain_radicale_reports_only_real_differences(
    recorded: Path,
    radicale: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Radicale lets any authenticated user write anywhere: the service account's session then means the same
    # thing there, and nothing that merely varies between servers (hosts, ETags, tokens, dates) is reported.
    assert replay_cli(recorded, radicale("authenticated"), "crm-secret", monkeypatch) == 0, capsys.readouterr().out

    # With owner-only rights the service account may not touch alice's calendar: a real difference, reported
    # request by request as refusals and nothing else.
    exchanges = har.load(recorded)
    target = Target.parse(radicale("owner_only"))
    report = asyncio.run(replay(exchanges, target, authorization=_basic(SERVICE, "crm-secret")))
    assert not report.matched
    for result in report.differing:
        assert result.exchange.url.split("/", 3)[3].startswith("alice/"), result.exchange.url
        # Every difference follows from a refusal: its status differs (and with it the body and ETag).
        assert any(d.kind is DiffKind.STATUS for d in result.differences), result.differences
        assert all(d.kind is not DiffKind.ERROR for d in result.differences)
    described = "\n".join(d.describe() for result in report.differing for d in result.differences)
    noise = ("getetag", "sync-token", "getctag", "getlastmodified", "127.0.0.1", "DTSTAMP", "Date")
    assert not any(word in described for word in noise), described


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_example_recording_is_valid_and_secret_free() -> None:
    path = Path(__file__).parent.parent / "recordings" / "crm-session.har"
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["log"]["version"] == "1.2"
    exchanges = har.load(path)
    assert {"PROPFIND", "MKCALENDAR", "PUT", "REPORT", "DELETE"} <= {e.method for e in exchanges}
    assert "crm-secret" not in path.read_text(encoding="utf-8")
