"""Helpers for the availability tests: iCalendar text builders and a calendar store on the SQL storage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from radicale import item as radicale_item
from radicale.item.filter import TIMESTAMP_MAX

from plugins.sqlstore import collection as sqlstore_collection
from plugins.sqlstore import storage as sqlstore_storage
from plugins.sqlstore import tables
from proxy import config
from proxy.engine import Engine, radicale_configuration
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


class SqlStore:
    """A user's calendars in the SQL storage (SQLite, or PostgreSQL with ``CALRELAY_TEST_DATABASE``), read as the
    engine reads them for availability. Objects are stored without calrelay's write-time checks, as the relay or
    an import may have stored them."""

    # The engine's own reads, on this storage: the service sees what it sees in a running server.
    list_calendars = Engine.list_calendars
    read_instances = Engine.read_instances

    def __init__(self, data_dir: Path) -> None:
        settings = config.load(overrides={"storage": {"data_dir": str(data_dir)}})
        self.storage = sqlstore_storage.Storage(radicale_configuration(settings))

    def _collection(self, path: str) -> sqlstore_collection.Collection:
        found = next(iter(self.storage.discover(path)), None)
        assert isinstance(found, sqlstore_collection.Collection), path
        return found

    def add_calendar(self, path: str, kind: str | None = "round-robin", mirror_role: str | None = None) -> None:
        props = {"tag": "VCALENDAR"}
        if kind is not None:
            props[CALENDAR_KIND_PROP] = kind
        if mirror_role is not None:
            props[MIRROR_ROLE_PROP] = mirror_role
        user = path.strip("/").split("/")[0]
        with self.storage.acquire_lock("w"):
            if next(iter(self.storage.discover(f"/{user}/")), None) is None:
                self.storage.create_collection(f"/{user}/")
            self.storage.create_collection(path, props=props)

    def set_prop(self, path: str, key: str, value: str) -> None:
        with self.storage.acquire_lock("w"):
            collection = self._collection(path)
            collection.set_meta({**collection.get_meta(), key: value})

    def put(self, path: str, href: str, text: str) -> None:
        item = radicale_item.Item(collection_path=path.strip("/"), vobject_item=radicale_item.read_components(text)[0])
        item.prepare()
        with self.storage.acquire_lock("w"):
            self._collection(path).upload(href, item)

    def put_raw(self, path: str, href: str, text: str) -> None:
        """Store ``text`` as it is, with no instance index rows: an object stored before today's checks (which
        it may fail), or one whose expansion failed when it was written."""
        with self.storage.acquire_lock("w"), self.storage.transaction("w") as connection:
            connection.execute(tables.items.insert().values(
                collection_id=self._collection(path).id, href=href, uid=href, etag=f'"{href}"', name="VCALENDAR",
                component="VEVENT", text=text, first_start=0, last_end=TIMESTAMP_MAX, recurring=False,
                indexed_until=TIMESTAMP_MAX, modified=time.time()))

    def delete(self, path: str, href: str | None = None) -> None:
        """Delete an object, or without ``href`` the whole calendar."""
        with self.storage.acquire_lock("w"):
            self._collection(path).delete(href)

    def close(self) -> None:
        self.storage.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    sql = SqlStore(tmp_path)
    yield sql
    sql.close()
