"""Helpers for the availability tests: iCalendar text builders and an in-memory calendar store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from proxy.model import CALENDAR_KIND_PROP, MIRROR_ROLE_PROP

PARIS_TZ = """BEGIN:VTIMEZONE
TZID:Europe/Paris
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
TZNAME:CEST
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
TZNAME:CET
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
END:VTIMEZONE
"""

NEW_YORK_TZ = """BEGIN:VTIMEZONE
TZID:America/New_York
BEGIN:DAYLIGHT
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
TZNAME:EDT
DTSTART:20070311T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
TZNAME:EST
DTSTART:20071104T020000
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
END:STANDARD
END:VTIMEZONE
"""


def vevent(uid: str, *lines: str) -> str:
    return "BEGIN:VEVENT\nUID:" + uid + "\nDTSTAMP:20260101T000000Z\n" + "".join(f"{line}\n" for line in lines) + (
        "END:VEVENT\n"
    )


def vcalendar(*components: str) -> str:
    body = "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//calrelay tests//EN\n" + "".join(components) + "END:VCALENDAR\n"
    return body.replace("\n", "\r\n")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@dataclass
class FakeItem:
    href: str
    etag: str
    text: str


@dataclass
class FakeCalendar:
    path: str
    props: Mapping[str, str]
    etag: str


@dataclass
class FakeStore:
    """A user's calendars in memory, counting reads so that cache behaviour can be asserted."""

    calendars: dict[str, dict[str, FakeItem]] = field(default_factory=dict)
    props: dict[str, dict[str, str]] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)
    _version: int = 0

    def add_calendar(self, path: str, kind: str | None = "round-robin", mirror_role: str | None = None) -> None:
        props = {}
        if kind is not None:
            props[CALENDAR_KIND_PROP] = kind
        if mirror_role is not None:
            props[MIRROR_ROLE_PROP] = mirror_role
        self.calendars[path] = {}
        self.props[path] = props

    def put(self, path: str, href: str, text: str) -> None:
        self._version += 1
        self.calendars[path][href] = FakeItem(href, f"etag-{self._version}", text)

    def delete(self, path: str, href: str) -> None:
        self._version += 1
        del self.calendars[path][href]

    def list_calendars(self, user: str) -> list[FakeCalendar]:
        return [
            FakeCalendar(path, self.props[path], self._collection_etag(path))
            for path in self.calendars
            if path.startswith(f"/{user}/")
        ]

    def read_items(self, path: str) -> list[FakeItem]:
        self.reads.append(path)
        return list(self.calendars.get(path, {}).values())

    def _collection_etag(self, path: str) -> str:
        return "|".join(sorted(item.etag for item in self.calendars[path].values())) or "empty"


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()
