"""Hand-written cases: each calendar, window and zone with the busy intervals a person would expect."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from proxy.availability.instances import Disposition, normalize_address
from proxy.availability.service import AvailabilityService, Freshness, UserView
from proxy.model import SCHEDULE_TRANSP_PROP
from tests.availability.conftest import NEW_YORK_TZ, PARIS_TZ, SqlStore, utc, vcalendar, vevent

ALICE = "mailto:alice@example.com"
NO_RELAY = Freshness(datetime(2026, 1, 1, tzinfo=UTC), timedelta(minutes=10), {}, relay_present=False)


@dataclass
class Case:
    name: str
    objects: list[str]  # calendar object texts, all in one booking calendar
    start: datetime
    end: datetime
    busy: list[tuple[datetime, datetime]]
    zone: str = "UTC"


CASES = [
    Case(
        "utc single event",
        [vcalendar(vevent("a", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z"))],
        utc(2026, 3, 2), utc(2026, 3, 3),
        [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10))],
    ),
    Case(
        "event outside the window",
        [vcalendar(vevent("a", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z"))],
        utc(2026, 3, 3), utc(2026, 3, 4),
        [],
    ),
    Case(
        "clipped to the window",
        [vcalendar(vevent("a", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z"))],
        utc(2026, 3, 2, 9, 30), utc(2026, 3, 2, 12),
        [(utc(2026, 3, 2, 9, 30), utc(2026, 3, 2, 10))],
    ),
    Case(
        "DURATION instead of DTEND",
        [vcalendar(vevent("a", "DTSTART:20260302T090000Z", "DURATION:PT45M"))],
        utc(2026, 3, 2), utc(2026, 3, 3),
        [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 9, 45))],
    ),
    Case(
        "weekly in Paris across the spring DST change keeps 09:00 local",
        [vcalendar(PARIS_TZ, vevent(
            "w", "DTSTART;TZID=Europe/Paris:20260323T090000", "DTEND;TZID=Europe/Paris:20260323T100000",
            "RRULE:FREQ=WEEKLY;COUNT=3",
        ))],
        utc(2026, 3, 20), utc(2026, 4, 20),
        [(utc(2026, 3, 23, 8), utc(2026, 3, 23, 9)), (utc(2026, 3, 30, 7), utc(2026, 3, 30, 8)),
         (utc(2026, 4, 6, 7), utc(2026, 4, 6, 8))],
    ),
    Case(
        "daily in New York across the autumn DST change",
        [vcalendar(NEW_YORK_TZ, vevent(
            "d", "DTSTART;TZID=America/New_York:20261031T090000", "DTEND;TZID=America/New_York:20261031T093000",
            "RRULE:FREQ=DAILY;COUNT=3",
        ))],
        utc(2026, 10, 31), utc(2026, 11, 3),
        [(utc(2026, 10, 31, 13), utc(2026, 10, 31, 13, 30)), (utc(2026, 11, 1, 14), utc(2026, 11, 1, 14, 30)),
         (utc(2026, 11, 2, 14), utc(2026, 11, 2, 14, 30))],
    ),
    Case(
        "an event spanning the DST night lasts one hour less in UTC",
        [vcalendar(PARIS_TZ, vevent(
            "n", "DTSTART;TZID=Europe/Paris:20260328T220000", "DTEND;TZID=Europe/Paris:20260329T060000",
        ))],
        utc(2026, 3, 28), utc(2026, 3, 30),
        [(utc(2026, 3, 28, 21), utc(2026, 3, 29, 4))],
    ),
    Case(
        "EXDATE removes one occurrence",
        [vcalendar(vevent(
            "x", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z", "RRULE:FREQ=DAILY;COUNT=3",
            "EXDATE:20260303T090000Z",
        ))],
        utc(2026, 3, 1), utc(2026, 3, 10),
        [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10)), (utc(2026, 3, 4, 9), utc(2026, 3, 4, 10))],
    ),
    Case(
        "RDATE adds an occurrence",
        [vcalendar(vevent(
            "r", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z", "RRULE:FREQ=WEEKLY;COUNT=1",
            "RDATE:20260305T150000Z",
        ))],
        utc(2026, 3, 1), utc(2026, 3, 10),
        [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10)), (utc(2026, 3, 5, 15), utc(2026, 3, 5, 16))],
    ),
    Case(
        "an override moves an occurrence out of the window",
        [vcalendar(
            vevent("o", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z", "RRULE:FREQ=DAILY;COUNT=5"),
            vevent("o", "RECURRENCE-ID:20260303T090000Z", "DTSTART:20260320T090000Z", "DTEND:20260320T100000Z"),
        )],
        utc(2026, 3, 3), utc(2026, 3, 4),
        [],
    ),
    Case(
        "an override moves an occurrence into the window",
        [vcalendar(
            vevent("o", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z", "RRULE:FREQ=DAILY;COUNT=5"),
            vevent("o", "RECURRENCE-ID:20260303T090000Z", "DTSTART:20260320T090000Z", "DTEND:20260320T113000Z"),
        )],
        utc(2026, 3, 20), utc(2026, 3, 21),
        [(utc(2026, 3, 20, 9), utc(2026, 3, 20, 11, 30))],
    ),
    Case(
        "an override cancels one occurrence",
        [vcalendar(
            vevent("o", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z", "RRULE:FREQ=DAILY;COUNT=2"),
            vevent("o", "RECURRENCE-ID:20260303T090000Z", "DTSTART:20260303T090000Z",
                   "DTEND:20260303T100000Z", "STATUS:CANCELLED"),
        )],
        utc(2026, 3, 1), utc(2026, 3, 5),
        [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10))],
    ),
    Case(
        "an override makes one occurrence FREE",
        [vcalendar(
            vevent("o", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z", "RRULE:FREQ=DAILY;COUNT=2"),
            vevent("o", "RECURRENCE-ID:20260302T090000Z", "DTSTART:20260302T090000Z",
                   "DTEND:20260302T100000Z", "TRANSP:TRANSPARENT"),
        )],
        utc(2026, 3, 1), utc(2026, 3, 5),
        [(utc(2026, 3, 3, 9), utc(2026, 3, 3, 10))],
    ),
    Case(
        "all-day in the user's zone (New York, after its DST start)",
        [vcalendar(vevent("ad", "DTSTART;VALUE=DATE:20260310", "DTEND;VALUE=DATE:20260311"))],
        utc(2026, 3, 9), utc(2026, 3, 12),
        [(utc(2026, 3, 10, 4), utc(2026, 3, 11, 4))],
        zone="America/New_York",
    ),
    Case(
        "all-day in Tokyo starts the evening before in UTC",
        [vcalendar(vevent("ad", "DTSTART;VALUE=DATE:20260310"))],
        utc(2026, 3, 9), utc(2026, 3, 12),
        [(utc(2026, 3, 9, 15), utc(2026, 3, 10, 15))],
        zone="Asia/Tokyo",
    ),
    Case(
        "two-day all-day over the Paris DST change is 47 hours",
        [vcalendar(vevent("ad", "DTSTART;VALUE=DATE:20260328", "DTEND;VALUE=DATE:20260330"))],
        utc(2026, 3, 27), utc(2026, 3, 31),
        [(utc(2026, 3, 27, 23), utc(2026, 3, 29, 22))],
        zone="Europe/Paris",
    ),
    Case(
        "floating time is in the user's zone",
        [vcalendar(vevent("f", "DTSTART:20260702T090000", "DTEND:20260702T100000"))],
        utc(2026, 7, 1), utc(2026, 7, 3),
        [(utc(2026, 7, 2, 7), utc(2026, 7, 2, 8))],
        zone="Europe/Berlin",
    ),
    Case(
        "recurring floating event follows the user's DST",
        [vcalendar(vevent("f", "DTSTART:20261024T090000", "DTEND:20261024T100000", "RRULE:FREQ=DAILY;COUNT=2"))],
        utc(2026, 10, 23), utc(2026, 10, 27),
        [(utc(2026, 10, 24, 7), utc(2026, 10, 24, 8)), (utc(2026, 10, 25, 8), utc(2026, 10, 25, 9))],
        zone="Europe/Berlin",
    ),
    Case(
        "FREE event does not block",
        [vcalendar(vevent("t", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z", "TRANSP:TRANSPARENT"))],
        utc(2026, 3, 2), utc(2026, 3, 3),
        [],
    ),
    Case(
        "explicit OPAQUE blocks",
        [vcalendar(vevent("t", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z", "TRANSP:OPAQUE"))],
        utc(2026, 3, 2), utc(2026, 3, 3),
        [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10))],
    ),
    Case(
        "CANCELLED event does not block",
        [vcalendar(vevent("c", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z", "STATUS:CANCELLED"))],
        utc(2026, 3, 2), utc(2026, 3, 3),
        [],
    ),
    Case(
        "TENTATIVE still blocks",
        [vcalendar(vevent("c", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z", "STATUS:TENTATIVE"))],
        utc(2026, 3, 2), utc(2026, 3, 3),
        [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10))],
    ),
    Case(
        "declined by the user does not block",
        [vcalendar(vevent(
            "d", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z",
            "ORGANIZER:mailto:bob@example.com",
            "ATTENDEE;PARTSTAT=DECLINED:MAILTO:Alice@Example.com",
            "ATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@example.com",
        ))],
        utc(2026, 3, 2), utc(2026, 3, 3),
        [],
    ),
    Case(
        "declined by someone else still blocks",
        [vcalendar(vevent(
            "d", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z",
            "ATTENDEE;PARTSTAT=ACCEPTED:mailto:alice@example.com",
            "ATTENDEE;PARTSTAT=DECLINED:mailto:carol@example.com",
        ))],
        utc(2026, 3, 2), utc(2026, 3, 3),
        [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10))],
    ),
    Case(
        "overlapping and touching events merge, a gap does not",
        [
            vcalendar(vevent("1", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z")),
            vcalendar(vevent("2", "DTSTART:20260302T093000Z", "DTEND:20260302T103000Z")),
            vcalendar(vevent("3", "DTSTART:20260302T103000Z", "DTEND:20260302T110000Z")),
            vcalendar(vevent("4", "DTSTART:20260302T113000Z", "DTEND:20260302T120000Z")),
        ],
        utc(2026, 3, 2), utc(2026, 3, 3),
        [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 11)), (utc(2026, 3, 2, 11, 30), utc(2026, 3, 2, 12))],
    ),
    Case(
        "a long event that began weeks before the window still blocks it",
        [vcalendar(vevent("long", "DTSTART:20260101T000000Z", "DTEND:20260401T000000Z"))],
        utc(2026, 3, 10), utc(2026, 3, 11),
        [(utc(2026, 3, 10), utc(2026, 3, 11))],
    ),
    Case(
        "a long recurring occurrence from an earlier bucket still blocks",
        [vcalendar(vevent(
            "lr", "DTSTART:20260101T000000Z", "DTEND:20260210T000000Z", "RRULE:FREQ=YEARLY;COUNT=2",
        ))],
        utc(2026, 2, 5), utc(2026, 2, 6),
        [(utc(2026, 2, 5), utc(2026, 2, 6))],
    ),
    Case(
        "an unbounded weekly series is expanded far from its start",
        [vcalendar(vevent("u", "DTSTART:20200106T090000Z", "DTEND:20200106T100000Z", "RRULE:FREQ=WEEKLY"))],
        utc(2026, 3, 1), utc(2026, 3, 8),
        [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10))],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_busy_intervals(case: Case, store: SqlStore) -> None:
    store.add_calendar("/alice/work/")
    for number, text in enumerate(case.objects):
        store.put("/alice/work/", f"item{number}.ics", text)
    view = UserView("alice", ZoneInfo(case.zone), frozenset({normalize_address(ALICE)}))
    answer = AvailabilityService(store).availability(view, case.start, case.end, NO_RELAY)
    assert [(interval.start, interval.end) for interval in answer.busy] == case.busy


@pytest.mark.parametrize(("transp", "blocks"), [(None, True), ("opaque", True), ("transparent", False)])
def test_a_calendar_marked_transparent_never_blocks(store: SqlStore, transp: str | None, blocks: bool) -> None:
    store.add_calendar("/alice/holidays/")
    if transp is not None:
        store.set_prop("/alice/holidays/", SCHEDULE_TRANSP_PROP, transp)
    store.put("/alice/holidays/", "a.ics", vcalendar(vevent("a", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z")))
    view = UserView("alice", ZoneInfo("UTC"), frozenset())
    answer = AvailabilityService(store).availability(view, utc(2026, 3, 2), utc(2026, 3, 3), NO_RELAY)
    assert bool(answer.busy) is blocks
    [instance] = answer.snapshot.instances
    assert instance.disposition(frozenset()) is (Disposition.BUSY if blocks else Disposition.NON_BLOCKING_CALENDAR)


def test_a_property_given_twice_counts_once(store: SqlStore) -> None:
    """The storage refuses such an object today (vobject); one stored before is read as Radicale reads it."""
    store.add_calendar("/alice/work/")
    store.put_raw("/alice/work/", "u.ics", vcalendar(vevent(
        "u", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z", "TRANSP:TRANSPARENT", "TRANSP:TRANSPARENT")))
    view = UserView("alice", ZoneInfo("UTC"), frozenset())
    answer = AvailabilityService(store).availability(view, utc(2026, 3, 2), utc(2026, 3, 3), NO_RELAY)
    assert answer.busy == [] and len(answer.free_events) == 1
