"""Expanded answers (plugins.sqlstore.expansion): Radicale's own bytes where Radicale is right, the instances of
an independent expansion everywhere, computed once per object version and range."""

from __future__ import annotations

import copy
import itertools
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import icalendar
import pytest
import recurring_ical_events
from radicale import item as radicale_item

from plugins.sqlstore import expansion, parsed
from plugins.sqlstore.collection import Collection
from tests.storage.test_sqlstore import EDGES, WINDOWS, instant_text, vcalendar, vevent

COLLECTION = Collection(None, SimpleNamespace(  # type: ignore[arg-type]
    path="u/c", id=1, props="{}", revision=0, sync_floor=0, modified=0.0))

MOVED_OUT = vcalendar(  # the override of 9 December moves it to the 29th
    vevent("moved-out", "DTSTART:20261207T090000Z\r\nDTEND:20261207T100000Z\r\nRRULE:FREQ=DAILY;COUNT=20\r\n")
    + vevent("moved-out", "RECURRENCE-ID:20261209T090000Z\r\nDTSTART:20261229T090000Z\r\nDTEND:20261229T100000Z\r\n"))


@pytest.fixture(autouse=True)
def empty_cache():
    expansion.CACHE.clear()
    yield
    expansion.CACHE.clear()


def starts(text: str | None) -> set[str]:
    return {instant_text(event["DTSTART"].dt) for event in icalendar.Calendar.from_ical(text).walk("VEVENT")} \
        if text else set()


def independent(text: str, start: datetime, end: datetime) -> set[str]:
    return {instant_text(event["DTSTART"].dt)
            for event in recurring_ical_events.of(icalendar.Calendar.from_ical(text)).between(start, end)}


def expanded(expand, item: radicale_item.Item, start: datetime, end: datetime) -> tuple[str | None, object]:
    try:
        element, count = expand(ET.Element("calendar-data"), copy.copy(item), start, end, start, end, 0)
    except Exception as error:
        return None, repr(error)
    return element.text, count


def both(text: str, start: datetime, end: datetime) -> tuple[tuple[str | None, object], tuple[str | None, object]]:
    """Radicale's expansion of a freshly parsed item, and the storage's of a stored one."""
    etag = radicale_item.get_etag(text)
    fresh = radicale_item.Item(collection_path="u/c", text=text, etag=etag, href="x.ics")
    stored = parsed.Item(collection=COLLECTION, text=text, etag=etag, href="x.ics")
    return expanded(expansion.radicale_expand, fresh, start, end), expanded(expansion.expand, stored, start, end)


def test_where_radicale_is_right_the_answer_is_radicales_byte_for_byte() -> None:
    right = 0
    objects = [text for name, text in EDGES.items() if name != "hourly"]  # 34 instances a week: too slow here
    for text, (start, end) in itertools.product(objects, WINDOWS):
        radicale, ours = both(text, start, end)
        want = independent(text, start, end)
        if radicale[0] is None:  # an error (Radicale cannot expand a floating series): ours expands it
            assert starts(ours[0]) == want, (text, start, end)
        elif starts(radicale[0]) == want:
            right += 1
            assert ours == radicale, (text, start, end)
        else:
            assert starts(ours[0]) == want, (text, start, end)
    assert right > len(WINDOWS) * 5


@pytest.mark.parametrize(("text", "start", "end"), [
    # An override moved out of the range: Radicale keeps it.
    (MOVED_OUT, datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 14, tzinfo=UTC)),
    (MOVED_OUT, datetime(2026, 12, 9, tzinfo=UTC), datetime(2026, 12, 10, tzinfo=UTC)),
    # An instance starting exactly at the end of the range: Radicale keeps it.
    (EDGES["hourly"], datetime(2026, 12, 10, tzinfo=UTC), datetime(2026, 12, 10, 1, tzinfo=UTC)),
    (EDGES["all-day-weekly"], datetime(2026, 12, 7, 12, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC)),
    # A single event without DTEND or DURATION starting at the start of the range: Radicale drops it.
    (EDGES["instant"], datetime(2026, 12, 8, 10, tzinfo=UTC), datetime(2026, 12, 8, 11, tzinfo=UTC)),
    (EDGES["date-only"], datetime(2026, 12, 11, 6, tzinfo=UTC), datetime(2026, 12, 11, 7, tzinfo=UTC)),
], ids=["moved-out week", "moved-out day", "hourly at the end", "all-day at the end", "instant", "date-only"])
def test_where_radicale_is_wrong_the_answer_is_the_independent_expansions(text, start, end) -> None:
    radicale, ours = both(text, start, end)
    assert starts(radicale[0]) != independent(text, start, end)
    assert starts(ours[0]) == independent(text, start, end) and ours[1] == len(independent(text, start, end))
    if radicale[0]:  # a series: the instances kept, as Radicale wrote them
        assert set(ours[0].splitlines()) < set(radicale[0].splitlines())
    else:  # a single event: as Radicale answers it in a range where it does find it
        assert ours == both(text, start - timedelta(days=1), end)[0]


def test_an_object_is_expanded_once_per_version_and_range(monkeypatch) -> None:
    calls, radicale_expand = [], expansion.radicale_expand

    def counted(*args):
        calls.append(args[1].etag)
        return radicale_expand(*args)

    monkeypatch.setattr(expansion, "radicale_expand", counted)
    start, end = WINDOWS[0]
    stored = parsed.Item(collection=COLLECTION, text=EDGES["weekly"], etag="v1", href="x.ics")
    first = expanded(expansion.expand, stored, start, end)
    assert expanded(expansion.expand, stored, start, end) == first  # the second property of the answer
    assert calls == ["v1"]
    expanded(expansion.expand, stored, *WINDOWS[1])  # another range
    changed = parsed.Item(collection=COLLECTION, text=EDGES["weekly"].replace("UID:weekly", "UID:w2"), etag="v2",
                          href="x.ics")
    expanded(expansion.expand, changed, start, end)  # another version
    assert calls == ["v1", "v1", "v2"]


def test_the_cache_stays_within_its_budget() -> None:
    cache = expansion.ExpansionCache(budget=1_000)
    for n in range(20):
        cache.put(n, ("x" * 200, 1))
    assert cache._size <= 1_000 and cache.get(19) == ("x" * 200, 1) and cache.get(0) is None


FLOATING = vcalendar(vevent("floating", "DTSTART:20261207T090000\r\nDTEND:20261207T093000\r\n"
                            "RRULE:FREQ=DAILY;COUNT=20\r\nEXDATE:20261209T090000\r\n"))


def test_a_floating_series_expands_with_its_times_read_as_utc() -> None:
    """Radicale's own expansion fails on it (a TypeError, which was a 500); floating times read as UTC, as
    the time-range test and the instance index read them."""
    start, end = datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 14, tzinfo=UTC)
    radicale, ours = both(FLOATING, start, end)
    assert radicale[0] is None and "TypeError" in str(radicale[1])
    assert starts(ours[0]) == {f"2026-12-{day:02d}T09:00:00+00:00" for day in (7, 8, 10, 11, 12, 13)}
    assert ours[1] == 6
