"""Availability reads the SQL storage's instance index: no parsing of what it lists, the same instances as
parsing would give, and the text only of what it does not list (a series past the horizon or the cap)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from plugins.sqlstore import tables
from proxy import database, schema
from proxy.availability.index import AvailabilityIndex
from proxy.availability.instances import Instance, ParsedItem
from proxy.availability.service import AvailabilityService, Freshness, UserView
from tests.availability.conftest import PARIS_TZ, SqlStore, utc, vcalendar, vevent

NO_RELAY = Freshness(datetime(2026, 1, 1, tzinfo=UTC), timedelta(minutes=10), {}, relay_present=False)
ALICE = UserView("alice", ZoneInfo("UTC"), frozenset({"mailto:alice@example.com"}))
WEEK = (utc(2026, 3, 2), utc(2026, 3, 9))


def event(uid: str, hour: int, *extra: str) -> str:
    return vcalendar(vevent(uid, f"DTSTART:20260302T{hour:02}0000Z", "DURATION:PT1H", *extra))


def busy(service: AvailabilityService, window: tuple[datetime, datetime] = WEEK) -> list[tuple[datetime, datetime]]:
    return [(b.start, b.end) for b in service.availability(ALICE, *window, NO_RELAY).busy]


#: Objects whose every field availability reports comes from the index row.
VARIED = [
    event("utc", 9, "SUMMARY:Consultation", "X-CALRELAY-KIND:BLOCKED"),
    vcalendar(vevent("floating", "DTSTART:20260303T140000", "DTEND:20260303T150000", "SUMMARY:Local")),
    vcalendar(vevent("all-day", "DTSTART;VALUE=DATE:20260329", "DTEND;VALUE=DATE:20260330")),  # DST in Paris
    vcalendar(PARIS_TZ, vevent(
        "weekly", "DTSTART;TZID=Europe/Paris:20260302T090000", "DTEND;TZID=Europe/Paris:20260302T100000",
        "RRULE:FREQ=WEEKLY", "EXDATE;TZID=Europe/Paris:20260316T090000"),
        vevent("weekly", "RECURRENCE-ID;TZID=Europe/Paris:20260309T090000", "SUMMARY:Moved", "TRANSP:TRANSPARENT",
               "DTSTART;TZID=Europe/Paris:20260310T110000", "DTEND;TZID=Europe/Paris:20260310T120000")),
    vcalendar(vevent("floating-daily", "DTSTART:20260302T080000", "DURATION:PT30M", "RRULE:FREQ=DAILY;COUNT=40",
                     "X-CALRELAY-TRAVEL:PT45M", "X-CALRELAY-POLICY:travel-time", "X-CALRELAY-ORIGIN:ICLOUD")),
    event("declined", 12, "ORGANIZER:mailto:bob@example.com", "ATTENDEE;PARTSTAT=DECLINED:mailto:Alice@Example.com",
          "ATTENDEE;PARTSTAT=ACCEPTED:mailto:carol@example.com"),
    event("cancelled", 13, "STATUS:CANCELLED"),
    vcalendar(vevent("long", "DTSTART;VALUE=DATE:20260220", "DTEND;VALUE=DATE:20260310")),  # a long one
    vcalendar(vevent("instant", "DTSTART:20260302T150000Z", "DURATION:PT0S")),  # no length: contains no instant
]


def parsed_instances(text: str, href: str, zone: ZoneInfo, start: datetime, end: datetime) -> set[Instance]:
    """What the index's rows must amount to: the object parsed and expanded in memory."""
    parsed = ParsedItem(text, "/alice/work/", href, zone)
    found = set(AvailabilityIndex()._expand(parsed, start, end))
    return {i for i in found if i.end > i.start}


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo"])
def test_the_index_gives_the_instances_parsing_gives_without_parsing(store: SqlStore, zone: str) -> None:
    store.add_calendar("/alice/work/")
    for number, text in enumerate(VARIED):
        store.put("/alice/work/", f"{number}.ics", text)
    view = UserView("alice", ZoneInfo(zone), ALICE.addresses)
    start, end = utc(2026, 2, 25), utc(2026, 4, 8)
    service = AvailabilityService(store)
    snapshot = service.snapshot(view, start, end, NO_RELAY)
    expected = set().union(*(parsed_instances(text, f"{number}.ics", view.zone, start, end)
                             for number, text in enumerate(VARIED)))
    assert set(snapshot.instances) == expected
    assert len(snapshot.instances) == len(expected)
    assert service.index.parsed_items == 0 and service.index.rows_read >= len(expected)


def test_a_change_is_seen_by_the_next_query(store: SqlStore) -> None:
    store.add_calendar("/alice/work/")
    store.add_calendar("/alice/other/")
    store.put("/alice/work/", "a.ics", event("a", 9))
    store.put("/alice/other/", "b.ics", event("b", 11, "RRULE:FREQ=DAILY"))
    service = AvailabilityService(store)
    assert len(busy(service)) == 8
    store.put("/alice/other/", "b.ics", event("b", 11, "RRULE:FREQ=DAILY;COUNT=2"))
    assert len(busy(service)) == 3
    store.delete("/alice/work/", "a.ics")
    store.delete("/alice/other/")
    assert busy(service) == []
    assert service.index.parsed_items == 0


def test_a_series_past_what_the_index_lists_is_expanded_from_its_text(store: SqlStore) -> None:
    """The index lists at most 1,000 instances per event: an hourly series beyond them, and a lone event
    beyond the horizon, are parsed (once, then kept) and expanded as they were before the index."""
    store.add_calendar("/alice/work/")
    store.put("/alice/work/", "h.ics", vcalendar(vevent(
        "h", "DTSTART:20260302T000000Z", "DTEND:20260302T000500Z", "RRULE:FREQ=HOURLY;UNTIL=20260701T000000Z")))
    store.put("/alice/work/", "far.ics", vcalendar(vevent("far", "DTSTART:20350302T090000Z", "DURATION:PT1H")))
    service = AvailabilityService(store)
    assert len(busy(service)) == 7 * 24 and service.index.parsed_items == 0  # inside the indexed instances
    later = (utc(2026, 6, 1), utc(2026, 6, 2))
    assert len(busy(service, later)) == 24 and service.index.parsed_items == 1
    assert len(busy(service, later)) == 24 and service.index.parsed_items == 1  # kept
    assert busy(service, (utc(2035, 3, 2), utc(2035, 3, 3))) == [(utc(2035, 3, 2, 9), utc(2035, 3, 2, 10))]
    assert service.index.parsed_items == 2  # the far event


def test_two_readers_of_one_database_give_the_same_answer(store: SqlStore) -> None:
    """What two calrelay processes on one database do: each has its own reader, neither has state."""
    store.add_calendar("/alice/work/")
    for number, text in enumerate(VARIED):
        store.put("/alice/work/", f"{number}.ics", text)
    first, second = AvailabilityService(store), AvailabilityService(store)

    def instances(service: AvailabilityService) -> set[Instance]:
        return set(service.snapshot(ALICE, *WEEK, NO_RELAY).instances)

    assert instances(first) == instances(second) != set()
    store.put("/alice/work/", "new.ics", event("new", 20))
    assert instances(first) == instances(second)
    assert "new" in {instance.uid for instance in instances(second)}


def test_db_upgrade_from_schema_1_indexes_what_availability_needs(store: SqlStore, tmp_path) -> None:
    """Schema 1's index rows lacked the busy columns: ``calrelay db upgrade`` makes the index again, and
    availability answers from it without parsing."""
    store.add_calendar("/alice/work/")
    for number, text in enumerate(VARIED):
        store.put("/alice/work/", f"{number}.ics", text)
    expected = busy(AvailabilityService(store))
    engine = store.storage.engine
    old = sa.MetaData()
    version_1 = sa.Table("dav_instances", old, *(sa.Column(name, column.type, nullable=column.nullable)
                                                 for name, column in tables.instances.c.items()
                                                 if name in ("collection_id", "href", "start", "end", "floating",
                                                             "transparent", "status")))
    with database.writing(engine) as connection:
        tables.instances.drop(connection)
        version_1.create(connection)
        connection.execute(schema.schema_version.update().values(version=1))
    store.close()
    upgrading = database.create_engine(database.default_url(tmp_path))
    try:
        assert schema.upgrade(upgrading) == (1, schema.VERSION)  # what `calrelay db upgrade` runs
    finally:
        upgrading.dispose()
    again = SqlStore(tmp_path)
    try:
        service = AvailabilityService(again)
        assert busy(service) == expected != []
        assert service.index.parsed_items == 0
    finally:
        again.close()
