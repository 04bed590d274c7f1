"""Fixtures for the upstream client tests: the iCloud emulator in-process and a plain Radicale subprocess,
both on loopback ports, reached over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from proxy.emulator import EmulatorServer
from proxy.upstream import Account, RemoteCalendar, UpstreamClient
from tests.helpers import plain_radicale

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


@pytest.fixture(scope="module")
def radicale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with plain_radicale(tmp_path_factory.mktemp("radicale")) as url:
        yield url


@pytest.fixture
def radicale(radicale_server: str) -> Radicale:
    return Radicale(radicale_server)
