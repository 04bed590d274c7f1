"""The index reuses what has not changed: collection ETag, item ETag, expanded buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from proxy.availability.index import AvailabilityIndex
from proxy.availability.service import AvailabilityService, Freshness, UserView
from tests.availability.conftest import FakeStore, utc, vcalendar, vevent

NO_RELAY = Freshness(datetime(2026, 1, 1, tzinfo=UTC), timedelta(minutes=10), {}, relay_present=False)
ALICE = UserView("alice", ZoneInfo("UTC"), frozenset())
WEEK = (utc(2026, 3, 2), utc(2026, 3, 9))


def event(uid: str, hour: int, *extra: str) -> str:
    return vcalendar(vevent(uid, f"DTSTART:20260302T{hour:02}0000Z", "DURATION:PT1H", *extra))


def busy(service: AvailabilityService) -> list[tuple[datetime, datetime]]:
    return [(b.start, b.end) for b in service.availability(ALICE, *WEEK, NO_RELAY).busy]


def test_an_unchanged_collection_is_not_read_again(store: FakeStore) -> None:
    store.add_calendar("/alice/work/")
    store.put("/alice/work/", "a.ics", event("a", 9))
    service = AvailabilityService(store)
    busy(service)
    busy(service)
    assert store.reads == ["/alice/work/"]
    assert service.index.parsed_items == 1


def test_only_the_changed_item_is_parsed_again(store: FakeStore) -> None:
    store.add_calendar("/alice/work/")
    store.put("/alice/work/", "a.ics", event("a", 9))
    store.put("/alice/work/", "b.ics", event("b", 11))
    service = AvailabilityService(store)
    assert busy(service) == [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10)), (utc(2026, 3, 2, 11), utc(2026, 3, 2, 12))]
    store.put("/alice/work/", "b.ics", event("b", 14))
    assert busy(service) == [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10)), (utc(2026, 3, 2, 14), utc(2026, 3, 2, 15))]
    assert store.reads == ["/alice/work/", "/alice/work/"]
    assert service.index.parsed_items == 3


def test_a_deleted_item_and_a_deleted_calendar_are_forgotten(store: FakeStore) -> None:
    store.add_calendar("/alice/work/")
    store.add_calendar("/alice/other/")
    store.put("/alice/work/", "a.ics", event("a", 9))
    store.put("/alice/other/", "b.ics", event("b", 11))
    service = AvailabilityService(store)
    assert len(busy(service)) == 2
    store.delete("/alice/work/", "a.ics")
    del store.calendars["/alice/other/"]
    assert busy(service) == []


def test_a_changed_recurring_item_drops_its_expansions(store: FakeStore) -> None:
    store.add_calendar("/alice/work/")
    store.put("/alice/work/", "r.ics", event("r", 9, "RRULE:FREQ=DAILY"))
    service = AvailabilityService(store)
    assert len(busy(service)) == 7
    store.put("/alice/work/", "r.ics", event("r", 9, "RRULE:FREQ=DAILY;COUNT=2"))
    assert len(busy(service)) == 2


def test_recurring_expansions_are_cached_per_bucket() -> None:
    store = FakeStore()
    store.add_calendar("/alice/work/")
    store.put("/alice/work/", "r.ics", event("r", 9, "RRULE:FREQ=DAILY"))
    index = AvailabilityIndex()
    collection = index.collection("/alice/work/", "e1", ZoneInfo("UTC"), store.read_items)
    (item,) = collection.recurring
    calls: list[tuple[datetime, datetime]] = []
    original = item.parsed.expand

    def counting(start: datetime, end: datetime):  # type: ignore[no-untyped-def]
        calls.append((start, end))
        return original(start, end)

    item.parsed.expand = counting  # type: ignore[method-assign]
    first = index.query(collection, *WEEK)
    expansions = len(calls)
    assert expansions >= 1
    assert index.query(collection, *WEEK) == first
    assert index.query(collection, utc(2026, 3, 3), utc(2026, 3, 4)) == [i for i in first if i.start.day == 3]
    assert len(calls) == expansions
