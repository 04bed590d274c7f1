"""Free slots, busy reasons, event kinds/origins and source freshness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from proxy.availability.instances import Disposition, normalize_address
from proxy.availability.intervals import BusyInterval, free_slots
from proxy.availability.service import AvailabilityService, Freshness, UserView
from proxy.availability.sources import SourceFreshness
from proxy.model import EventKind, Origin
from tests.availability.conftest import SqlStore, utc, vcalendar, vevent

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
NO_RELAY = Freshness(NOW, timedelta(minutes=10), {}, relay_present=False)
ALICE = UserView("alice", ZoneInfo("UTC"), frozenset({normalize_address("alice@example.com")}))


def busy(start: datetime, end: datetime) -> BusyInterval:
    return BusyInterval(start, end, ())


def test_free_slots_are_on_the_local_grid_and_avoid_busy_time() -> None:
    slots = free_slots(
        [busy(utc(2026, 3, 2, 9, 10), utc(2026, 3, 2, 9, 40))],
        utc(2026, 3, 2, 8, 50), utc(2026, 3, 2, 11), timedelta(minutes=30), ZoneInfo("UTC"),
    )
    assert slots == [
        (utc(2026, 3, 2, 10), utc(2026, 3, 2, 10, 30)),
        (utc(2026, 3, 2, 10, 30), utc(2026, 3, 2, 11)),
    ]


def test_free_slots_restart_at_local_midnight() -> None:
    zone = ZoneInfo("Europe/Paris")  # 23:00 UTC is local midnight in winter
    slots = free_slots([], utc(2026, 3, 2, 20), utc(2026, 3, 3, 3), timedelta(minutes=100), zone)
    starts = [start for start, _ in slots]
    # 21:00 local is not on the 100-minute grid from midnight, 21:40 is; 23:20-01:00 local may cross midnight,
    # then the next day's grid goes on at 01:40 local rather than drifting.
    assert starts == [utc(2026, 3, 2, 20, 40), utc(2026, 3, 2, 22, 20), utc(2026, 3, 3, 0, 40)]
    assert all(end - start == timedelta(minutes=100) for start, end in slots)


def test_free_slots_of_a_whole_day_around_dst() -> None:
    zone = ZoneInfo("Europe/Paris")
    slots = free_slots([], utc(2026, 3, 28, 23), utc(2026, 3, 29, 22), timedelta(hours=1), zone)
    assert len(slots) == 23  # the short day has 23 hourly slots
    assert slots[0][0] == utc(2026, 3, 28, 23)


def test_answer_lists_free_events_and_busy_sources(store: SqlStore) -> None:
    store.add_calendar("/alice/work/")
    store.add_calendar("/alice/icloud-home/", kind=None, mirror_role="conflict")
    store.put("/alice/work/", "a.ics", vcalendar(vevent(
        "appt", "SUMMARY:Consultation", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z")))
    store.put("/alice/work/", "b.ics", vcalendar(vevent(
        "blk", "SUMMARY:Lunch", "X-CALRELAY-KIND:BLOCKED", "DTSTART:20260302T093000Z", "DTEND:20260302T103000Z")))
    store.put("/alice/icloud-home/", "c.ics", vcalendar(vevent(
        "ic", "SUMMARY:Dentist", "X-CALRELAY-KIND:BLOCKED", "X-CALRELAY-ORIGIN:ICLOUD",
        "DTSTART:20260302T140000Z", "DTEND:20260302T150000Z")))
    store.put("/alice/icloud-home/", "d.ics", vcalendar(vevent(
        "fr", "SUMMARY:Reminder", "TRANSP:TRANSPARENT", "X-CALRELAY-ORIGIN:ICLOUD",
        "DTSTART:20260302T160000Z", "DTEND:20260302T170000Z")))
    answer = AvailabilityService(store).availability(
        ALICE, utc(2026, 3, 2), utc(2026, 3, 3), NO_RELAY, slot=timedelta(hours=1)
    )
    assert [(b.start, b.end) for b in answer.busy] == [
        (utc(2026, 3, 2, 9), utc(2026, 3, 2, 10, 30)),
        (utc(2026, 3, 2, 14), utc(2026, 3, 2, 15)),
    ]
    first = answer.busy[0].sources
    assert [(i.uid, i.kind, i.origin, i.calendar) for i in first] == [
        ("appt", EventKind.APPOINTMENT, Origin.CRM, "/alice/work/"),
        ("blk", EventKind.BLOCKED, Origin.CRM, "/alice/work/"),
    ]
    assert (answer.busy[1].sources[0].kind, answer.busy[1].sources[0].origin) == (EventKind.BLOCKED, Origin.ICLOUD)
    assert [i.uid for i in answer.free_events] == ["fr"]
    assert answer.slots is not None
    assert (utc(2026, 3, 2, 10), utc(2026, 3, 2, 11)) not in answer.slots  # 10:00-10:30 is busy
    assert (utc(2026, 3, 2, 11), utc(2026, 3, 2, 12)) in answer.slots
    assert (utc(2026, 3, 2, 16), utc(2026, 3, 2, 17)) in answer.slots  # FREE leaves the slot open


def test_busy_reasons_include_what_does_not_block(store: SqlStore) -> None:
    store.add_calendar("/alice/work/")
    lines = ("DTSTART:20260302T090000Z", "DTEND:20260302T100000Z")
    store.put("/alice/work/", "1.ics", vcalendar(vevent("free", "TRANSP:TRANSPARENT", *lines)))
    store.put("/alice/work/", "2.ics", vcalendar(vevent("cancelled", "STATUS:CANCELLED", *lines)))
    store.put("/alice/work/", "3.ics", vcalendar(vevent(
        "declined", "ATTENDEE;PARTSTAT=DECLINED:mailto:alice@example.com", *lines)))
    service = AvailabilityService(store)
    answer = service.reasons(ALICE, utc(2026, 3, 2, 9, 30), NO_RELAY)
    assert not answer.busy
    assert {(i.uid, d) for i, d in answer.reasons} == {
        ("free", Disposition.FREE), ("cancelled", Disposition.CANCELLED), ("declined", Disposition.DECLINED),
    }
    store.put("/alice/work/", "4.ics", vcalendar(vevent("busy", *lines)))
    answer = service.reasons(ALICE, utc(2026, 3, 2, 9, 30), NO_RELAY)
    assert answer.busy
    assert answer.reasons[0][0].uid == "busy"
    assert service.reasons(ALICE, utc(2026, 3, 2, 10), NO_RELAY).reasons == []  # the end is exclusive


def test_a_stale_mirror_is_marked_and_still_blocks(store: SqlStore) -> None:
    store.add_calendar("/alice/work/")
    store.add_calendar("/alice/icloud/", kind=None, mirror_role="primary")
    store.add_calendar("/alice/icloud-fresh/", kind=None, mirror_role="conflict")
    store.add_calendar("/alice/icloud-new/", kind=None, mirror_role="conflict")
    store.put("/alice/icloud/", "e.ics", vcalendar(vevent(
        "ic", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z")))
    freshness = Freshness(NOW, timedelta(minutes=10), {
        "/alice/icloud/": SourceFreshness(NOW - timedelta(hours=1), error="503 from iCloud"),
        "/alice/icloud-fresh/": SourceFreshness(NOW - timedelta(minutes=1)),
    }, relay_present=True)
    answer = AvailabilityService(store).availability(ALICE, utc(2026, 3, 2), utc(2026, 3, 3), freshness)
    assert [(b.start, b.end) for b in answer.busy] == [(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10))]
    status = {source.path: source for source in answer.snapshot.sources}
    assert status["/alice/icloud/"].stale and status["/alice/icloud/"].error == "503 from iCloud"
    assert not status["/alice/icloud-fresh/"].stale
    assert status["/alice/icloud-new/"].stale and status["/alice/icloud-new/"].last_success is None
    assert not status["/alice/work/"].stale and status["/alice/work/"].mirror_role is None
    assert answer.snapshot.stale_paths == {"/alice/icloud/", "/alice/icloud-new/"}


def test_the_relays_own_verdict_makes_a_recent_mirror_stale(store: SqlStore) -> None:
    store.add_calendar("/alice/icloud/", kind=None, mirror_role="primary")
    freshness = Freshness(NOW, timedelta(minutes=10), {
        "/alice/icloud/": SourceFreshness(NOW, stale=True, error="needs reconnect"),
    }, relay_present=True)
    answer = AvailabilityService(store).availability(ALICE, utc(2026, 3, 2), utc(2026, 3, 3), freshness)
    assert answer.snapshot.stale_paths == {"/alice/icloud/"}


def test_without_a_relay_mirrors_are_unknown_not_stale(store: SqlStore) -> None:
    store.add_calendar("/alice/icloud/", kind=None, mirror_role="primary")
    answer = AvailabilityService(store).availability(ALICE, utc(2026, 3, 2), utc(2026, 3, 3), NO_RELAY)
    (source,) = answer.snapshot.sources
    assert (source.last_success, source.stale) == (None, False)


def test_unknown_kind_and_origin_still_block(store: SqlStore) -> None:
    store.add_calendar("/alice/work/")
    store.put("/alice/work/", "x.ics", vcalendar(vevent(
        "odd", "X-CALRELAY-KIND:MEETING", "X-CALRELAY-ORIGIN:ELSEWHERE",
        "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z")))
    answer = AvailabilityService(store).availability(ALICE, utc(2026, 3, 2), utc(2026, 3, 3), NO_RELAY)
    (interval,) = answer.busy
    assert (interval.sources[0].kind, interval.sources[0].origin) == (EventKind.APPOINTMENT, Origin.CRM)


def test_an_unreadable_item_is_reported_not_silently_free(store: SqlStore) -> None:
    store.add_calendar("/alice/work/")
    store.put_raw("/alice/work/", "bad.ics", "BEGIN:VCALENDAR\r\nthis is not iCalendar\r\n")
    store.put("/alice/work/", "ok.ics", vcalendar(vevent("ok", "DTSTART:20260302T090000Z", "DURATION:PT1H")))
    answer = AvailabilityService(store).availability(ALICE, utc(2026, 3, 2), utc(2026, 3, 3), NO_RELAY)
    assert list(answer.snapshot.problems["/alice/work/"]) == ["bad.ics"]
    assert len(answer.busy) == 1
