"""Fixtures for the iCloud emulator tests: a live emulator on ephemeral loopback ports and a raw HTTP client."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from proxy.emulator import EmulatorServer

APPLE_ID = "demo@icloud.test"
APP_PASSWORD = "abcd-efgh-ijkl-mnop"
DSID = "1234567890"
HOME = f"/{DSID}/calendars/"
CS = "http://calendarserver.org/ns/"


def basic(user: str = APPLE_ID, password: str = APP_PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def event(uid: str, start: str = "20260501T100000Z", end: str | None = "20260501T110000Z", extra: str = "") -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calrelay tests//EN", "BEGIN:VEVENT", f"UID:{uid}",
             "DTSTAMP:20260101T000000Z", f"DTSTART:{start}"]
    if end:
        lines.append(f"DTEND:{end}")
    lines += [f"SUMMARY:Event {uid}", *[line for line in extra.split("\n") if line], "END:VEVENT", "END:VCALENDAR"]
    return "\r\n".join(lines) + "\r\n"


def propfind_body(*props: str) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?><propfind xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" ' \
        f'xmlns:CS="{CS}" xmlns:A="http://apple.com/ns/ical/"><prop>{"".join(props)}</prop></propfind>'


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    text: str


class Dav:
    """Raw requests against the emulator, where the exact bytes matter."""

    def __init__(self, session: aiohttp.ClientSession, emulator: EmulatorServer) -> None:
        self.session = session
        self.emulator = emulator

    async def request(
        self,
        method: str,
        path: str,
        body: str | bytes | None = None,
        *,
        partition: bool = True,
        auth: str | None = basic(),
        headers: dict[str, str] | None = None,
        redirects: bool = False,
    ) -> Reply:
        base = self.emulator.partition_url if partition else self.emulator.discovery_url
        all_headers = dict(headers or {})
        if auth:
            all_headers["Authorization"] = auth
        if isinstance(body, str) and "Content-Type" not in all_headers:
            all_headers["Content-Type"] = "text/xml; charset=utf-8"
        url = path if path.startswith("http") else base.rstrip("/") + path
        async with self.session.request(
            method, url, data=body.encode() if isinstance(body, str) else body, headers=all_headers,
            allow_redirects=redirects,
        ) as response:
            return Reply(response.status, response.headers, await response.text())

    async def put(self, path: str, body: str, **headers: str) -> Reply:
        return await self.request(
            "PUT", path, body, headers={"Content-Type": "text/calendar; charset=utf-8", **headers}
        )

    async def report(self, path: str, body: str, depth: str = "1") -> Reply:
        return await self.request("REPORT", path, body, headers={"Depth": depth})

    async def propfind(self, path: str, *props: str, depth: str = "0", partition: bool = True) -> Reply:
        return await self.request(
            "PROPFIND", path, propfind_body(*props), headers={"Depth": depth}, partition=partition
        )


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
async def dav(emulator: EmulatorServer) -> AsyncIterator[Dav]:
    async with aiohttp.ClientSession() as session:
        yield Dav(session, emulator)
