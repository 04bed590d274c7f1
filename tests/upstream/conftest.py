"""Fixtures for the upstream client tests: the iCloud emulator in-process and a plain Radicale subprocess,
both on loopback ports, reached over real HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from proxy.emulator import EmulatorServer
from proxy.upstream import Account, RemoteCalendar, UpstreamClient

APPLE_ID = "demo@icloud.test"
APP_PASSWORD = "abcd-efgh-ijkl-mnop"
MAIN_PASSWORD = "demo-main-password"
SHARED_ID = "cfa59b59b909cac26e9a38c3402420644179574dc08d605f342d6df5400f3d01"
SUBSCRIBED_ID = "7B1E2F90-3C4D-4E5F-8A9B-0C1D2E3F4A5B"


def event(uid: str, summary: str = "Meeting", start: str = "20260501T100000Z", end: str = "20260501T110000Z") -> str:
    return "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calrelay tests//EN", "BEGIN:VEVENT", f"UID:{uid}",
        "DTSTAMP:20260101T000000Z", f"DTSTART:{start}", f"DTEND:{end}", f"SUMMARY:{summary}",
        "END:VEVENT", "END:VCALENDAR", "",
    ])


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(host="127.0.0.1", port=0, partition_port=0) as emu:
        yield emu


@pytest.fixture
async def client(emulator: EmulatorServer) -> AsyncIterator[UpstreamClient]:
    async with UpstreamClient(emulator.discovery_url, APPLE_ID, APP_PASSWORD, timeout=5) as upstream:
        yield upstream


@pytest.fixture
async def account(client: UpstreamClient) -> Account:
    return await client.discover()


def calendar(account: Account, name: str) -> RemoteCalendar:
    return next(c for c in account.calendars if c.name == name)


@pytest.fixture
def work(account: Account) -> RemoteCalendar:
    return calendar(account, "work")


# -- Radicale ----------------------------------------------------------------------------------------------


@dataclass
class Radicale:
    url: str
    user: str = "alice"

    async def mkcalendar(self, name: str) -> str:
        """Create a VEVENT calendar with MKCALENDAR; returns its URL."""
        url = f"{self.url}{self.user}/{name}/"
        body = (
            '<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop><D:displayname>'
            f"{name.title()}</D:displayname><C:supported-calendar-component-set><C:comp name=\"VEVENT\"/>"
            "</C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"
        )
        headers = {"Content-Type": "application/xml", "Authorization": aiohttp.encode_basic_auth(self.user, "x")}
        async with aiohttp.ClientSession() as session, session.request(
            "MKCALENDAR", url, data=body, headers=headers
        ) as reply:
            assert reply.status == 201, await reply.text()
        return url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def radicale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("radicale")
    port = _free_port()
    config = root / "config"
    config.write_text(
        f"[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = none\n"
        f"[storage]\nfilesystem_folder = {root / 'collections'}\n[web]\ntype = none\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "radicale", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None:
                    output = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(f"radicale exited: {output}") from None
                time.sleep(0.1)
        else:
            raise RuntimeError("radicale did not start")
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def radicale(radicale_server: str) -> Radicale:
    return Radicale(radicale_server)
