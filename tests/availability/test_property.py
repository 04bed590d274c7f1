"""Property test: the service agrees with a brute-force expansion written here with dateutil.rrule.

The brute force steps through occurrences with ``dateutil.rrule`` in wall-clock time, applies EXDATE and
overrides by hand, places each occurrence in its zone, and marks every busy 15-minute tick of the window.
All generated times are multiples of 15 minutes (and so are the zones' offsets), so the ticks are exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil import rrule
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.availability.instances import normalize_address
from proxy.availability.service import AvailabilityService, Freshness, UserView
from tests.availability.conftest import SqlStore, vcalendar, vevent

TICK = timedelta(minutes=15)
YEAR_START = datetime(2026, 1, 1)
NO_RELAY = Freshness(datetime(2026, 1, 1, tzinfo=UTC), timedelta(minutes=10), {}, relay_present=False)
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]


@dataclass(frozen=True)
class Override:
    index: int  # which occurrence
    shift_hours: int
    transparent: bool


@dataclass(frozen=True)
class Event:
    style: str  # "utc", "floating" or "allday"
    start: datetime  # naive wall time (UTC for "utc"; midnight for "allday")
    length: timedelta  # minutes, or whole days for "allday"
    freq: int | None
    interval: int
    count: int
    exdate: int | None
    override: Override | None
    transparent: bool
    cancelled: bool
    declined: bool


@st.composite
def events(draw: st.DrawFn) -> Event:
    style = draw(st.sampled_from(["utc", "floating", "allday"]))
    day = draw(st.integers(0, 150))
    if style == "allday":
        start = YEAR_START + timedelta(days=day)
        length = timedelta(days=draw(st.integers(1, 3)))
    else:
        start = YEAR_START + timedelta(days=day, minutes=15 * draw(st.integers(0, 95)))
        length = TICK * draw(st.integers(1, 40))
    recurring = draw(st.booleans())
    count = draw(st.integers(1, 12)) if recurring else 1
    return Event(
        style=style,
        start=start,
        length=length,
        freq=draw(st.sampled_from([rrule.DAILY, rrule.WEEKLY])) if recurring else None,
        interval=draw(st.integers(1, 3)),
        count=count,
        exdate=draw(st.none() | st.integers(0, count - 1)) if recurring else None,
        override=draw(st.none() | st.builds(Override, st.integers(0, count - 1), st.integers(-48, 48), st.booleans()))
        if recurring
        else None,
        transparent=draw(st.integers(0, 5)) == 0,
        cancelled=draw(st.integers(0, 7)) == 0,
        declined=draw(st.integers(0, 7)) == 0,
    )


def fmt(style: str, value: datetime) -> str:
    if style == "allday":
        return f";VALUE=DATE:{value:%Y%m%d}"
    return f":{value:%Y%m%dT%H%M%S}" + ("Z" if style == "utc" else "")


def to_text(uid: str, event: Event) -> str:
    master = [f"DTSTART{fmt(event.style, event.start)}", f"DTEND{fmt(event.style, event.start + event.length)}"]
    if event.freq is not None:
        name = "DAILY" if event.freq == rrule.DAILY else "WEEKLY"
        master.append(f"RRULE:FREQ={name};INTERVAL={event.interval};COUNT={event.count}")
    occurrences = wall_occurrences(event)
    if event.exdate is not None:
        master.append(f"EXDATE{fmt(event.style, occurrences[event.exdate])}")
    flags = []
    if event.transparent:
        flags.append("TRANSP:TRANSPARENT")
    if event.cancelled:
        flags.append("STATUS:CANCELLED")
    attendee = "bob@example.com" if not event.declined else "alice@example.com"
    flags.append(f"ATTENDEE;PARTSTAT=DECLINED:mailto:{attendee}")
    components = [vevent(uid, *master, *flags)]
    if event.override is not None and event.override.index != event.exdate:
        original = occurrences[event.override.index]
        moved = original + timedelta(hours=event.override.shift_hours)
        if event.style == "allday":
            moved = datetime.combine(moved.date(), time())
        lines = [
            f"RECURRENCE-ID{fmt(event.style, original)}",
            f"DTSTART{fmt(event.style, moved)}",
            f"DTEND{fmt(event.style, moved + event.length)}",
            *flags,
        ]
        if event.override.transparent and not event.transparent:  # a property given once, as stored
            lines.append("TRANSP:TRANSPARENT")
        components.append(vevent(uid, *lines))
    return vcalendar(*components)


def wall_occurrences(event: Event) -> list[datetime]:
    if event.freq is None:
        return [event.start]
    return list(rrule.rrule(event.freq, dtstart=event.start, interval=event.interval, count=event.count))


def place(style: str, wall: datetime, zone: ZoneInfo) -> datetime:
    return wall.replace(tzinfo=UTC if style == "utc" else zone).astimezone(UTC)


def brute_force_ticks(evs: list[Event], zone: ZoneInfo, start: datetime, end: datetime) -> set[datetime]:
    busy: set[datetime] = set()
    for event in evs:
        if event.cancelled or event.declined:
            continue
        for index, wall in enumerate(wall_occurrences(event)):
            if index == event.exdate:
                continue
            transparent = event.transparent
            if event.override is not None and event.override.index == index:
                wall = wall + timedelta(hours=event.override.shift_hours)
                if event.style == "allday":
                    wall = datetime.combine(wall.date(), time())
                transparent = transparent or event.override.transparent
            if transparent:
                continue
            begin, finish = place(event.style, wall, zone), place(event.style, wall + event.length, zone)
            tick = start
            while tick < end:
                if begin <= tick < finish:
                    busy.add(tick)
                tick += TICK
    return busy


_CALENDARS = itertools.count()


@pytest.fixture(scope="module")
def module_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlStore]:
    """One store for every example (each example has a calendar of its own)."""
    sql = SqlStore(tmp_path_factory.mktemp("availability-property"))
    yield sql
    sql.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    evs=st.lists(events(), max_size=8),
    zone_name=st.sampled_from(ZONES),
    window_day=st.integers(0, 170),
    window_hours=st.integers(1, 24 * 40),
)
def test_service_matches_brute_force(
    module_store: SqlStore, evs: list[Event], zone_name: str, window_day: int, window_hours: int
) -> None:
    zone = ZoneInfo(zone_name)
    store = module_store
    calendar = f"/alice/c{next(_CALENDARS)}/"  # a calendar of its own for each example, alone in the store
    store.add_calendar(calendar)
    for number, event in enumerate(evs):
        store.put(calendar, f"{number}.ics", to_text(f"uid-{number}", event))
    start = datetime.combine(date(2026, 1, 1) + timedelta(days=window_day), time(), tzinfo=UTC)
    end = start + timedelta(hours=window_hours)
    view = UserView("alice", zone, frozenset({normalize_address("alice@example.com")}))
    answer = AvailabilityService(store).availability(view, start, end, NO_RELAY)
    store.delete(calendar)

    ticks: set[datetime] = set()
    for interval in answer.busy:
        assert start <= interval.start < interval.end <= end
        tick = interval.start
        while tick < interval.end:
            ticks.add(tick)
            tick += TICK
    assert ticks == brute_force_ticks(evs, zone, start, end)
    for earlier, later in zip(answer.busy, answer.busy[1:], strict=False):
        assert earlier.end < later.start  # merged: neither overlapping nor touching
