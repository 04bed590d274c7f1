"""Tests of the relay's pure transforms: push, mirror, merge, identity helpers and the content hash."""

from __future__ import annotations

import random
import re
from datetime import date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from icalendar import Calendar

from proxy.model import EventKind, Origin
from proxy.relay.policies import AllDayMode, LinkPolicies, UnansweredMode
from proxy.relay.transforms import (
    content_hash,
    is_event_object,
    merge_icloud_edit,
    mirror_of,
    object_kind,
    object_origin,
    object_uid,
    parse_event_object,
    remote_name,
    to_icloud,
    to_mirror,
    uid_and_hash,
)


def ics(*lines: str) -> str:
    """An iCalendar text from unfolded lines, CRLF-terminated."""
    return "".join(f"{line}\r\n" for line in lines)


#: A CRM appointment as the CRM writes it: scheduling METHOD, attendees with parameters, a time zone without
#: VTIMEZONE, no DTEND, calrelay's own marks.
CRM_APPOINTMENT = ics(
    "BEGIN:VCALENDAR",
    "VERSION:2.0",
    "PRODID:-//Acme CRM//Bookings//EN",
    "METHOD:REQUEST",
    "BEGIN:VEVENT",
    "UID:booking-4711@crm.example",
    "DTSTAMP:20261120T080000Z",
    "DTSTART;TZID=Europe/Paris:20261201T090000",
    "SUMMARY:Consultation\\, first visit",
    "LOCATION:Room 2",
    "DESCRIPTION:Bring the forms.\\nParking at the back.",
    'ATTENDEE;CN="Doe, Jane";ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:jane@example.org',
    "ORGANIZER;CN=Front Desk:mailto:desk@clinic.example",
    "X-CALRELAY-KIND:APPOINTMENT",
    "X-CALRELAY-ORIGIN:CRM",
    "BEGIN:VALARM",
    "ACTION:DISPLAY",
    "DESCRIPTION:Reminder",
    "TRIGGER:-PT15M",
    "END:VALARM",
    "END:VEVENT",
    "END:VCALENDAR",
)

#: A weekly series with a moved occurrence, a cancelled one and its own VTIMEZONE.
CRM_SERIES = ics(
    "BEGIN:VCALENDAR",
    "VERSION:2.0",
    "PRODID:-//Acme CRM//Bookings//EN",
    "BEGIN:VTIMEZONE",
    "TZID:America/New_York",
    "BEGIN:STANDARD",
    "DTSTART:19701101T020000",
    "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU",
    "TZOFFSETFROM:-0400",
    "TZOFFSETTO:-0500",
    "TZNAME:EST",
    "END:STANDARD",
    "BEGIN:DAYLIGHT",
    "DTSTART:19700308T020000",
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU",
    "TZOFFSETFROM:-0500",
    "TZOFFSETTO:-0400",
    "TZNAME:EDT",
    "END:DAYLIGHT",
    "END:VTIMEZONE",
    "BEGIN:VEVENT",
    "UID:class-42",
    "DTSTAMP:20261120T080000Z",
    "DTSTART;TZID=America/New_York:20261202T180000",
    "DTEND;TZID=America/New_York:20261202T190000",
    "RRULE:FREQ=WEEKLY;BYDAY=WE;COUNT=10",
    "EXDATE;TZID=America/New_York:20261216T180000",
    "SUMMARY:Yoga class",
    "ATTENDEE;CN=Sam;SCHEDULE-AGENT=SERVER:mailto:sam@example.org",
    "X-CALRELAY-KIND:APPOINTMENT",
    "END:VEVENT",
    "BEGIN:VEVENT",
    "UID:class-42",
    "DTSTAMP:20261120T080000Z",
    "RECURRENCE-ID;TZID=America/New_York:20261209T180000",
    "DTSTART;TZID=America/New_York:20261209T190000",
    "DTEND;TZID=America/New_York:20261209T200000",
    "SUMMARY:Yoga class (late)",
    "ATTENDEE;CN=Sam:mailto:sam@example.org",
    "END:VEVENT",
    "END:VCALENDAR",
)

CRM_ALL_DAY = ics(
    "BEGIN:VCALENDAR",
    "VERSION:2.0",
    "PRODID:-//Acme CRM//Bookings//EN",
    "BEGIN:VEVENT",
    "UID:offsite-1",
    "DTSTAMP:20261120T080000Z",
    "DTSTART;VALUE=DATE:20261224",
    "SUMMARY:Team offsite",
    "TRANSP:TRANSPARENT",
    "END:VEVENT",
    "END:VCALENDAR",
)

#: An event as iCloud serves it: Apple housekeeping, organizer and attendees, an alarm, an override.
ICLOUD_EVENT = ics(
    "BEGIN:VCALENDAR",
    "VERSION:2.0",
    "PRODID:-//Apple Inc.//iPhone OS 18.1//EN",
    "CALSCALE:GREGORIAN",
    "BEGIN:VTIMEZONE",
    "TZID:Europe/Berlin",
    "BEGIN:STANDARD",
    "DTSTART:19701025T030000",
    "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
    "TZOFFSETFROM:+0200",
    "TZOFFSETTO:+0100",
    "TZNAME:CET",
    "END:STANDARD",
    "BEGIN:DAYLIGHT",
    "DTSTART:19700329T020000",
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU",
    "TZOFFSETFROM:+0100",
    "TZOFFSETTO:+0200",
    "TZNAME:CEST",
    "END:DAYLIGHT",
    "END:VTIMEZONE",
    "BEGIN:VEVENT",
    "UID:7E1C1A2B-0000-4C3D-9F00-ICLOUD",
    "DTSTAMP:20261120T101500Z",
    "DTSTAMP:20261120T101501Z",
    "CREATED:20261101T090000Z",
    "LAST-MODIFIED:20261120T101500Z",
    "SEQUENCE:2",
    "DTSTART;TZID=Europe/Berlin:20261203T140000",
    "DTEND;TZID=Europe/Berlin:20261203T150000",
    "RRULE:FREQ=DAILY;COUNT=5",
    "EXDATE;TZID=Europe/Berlin:20261205T140000",
    "SUMMARY:Dentist",
    "LOCATION:Hauptstr. 1\\, Berlin",
    "DESCRIPTION:Check-up",
    "STATUS:CONFIRMED",
    "TRANSP:OPAQUE",
    "ORGANIZER;CN=Max Mustermann;EMAIL=max@icloud.com:mailto:max@icloud.com",
    "ATTENDEE;CN=Dr. Who;PARTSTAT=ACCEPTED:mailto:dr@dentist.example",
    "CONTACT:Reception\\, +49 30 1234",
    "X-APPLE-STRUCTURED-LOCATION;VALUE=URI;X-ADDRESS=Hauptstr. 1;X-TITLE=Dentist:geo:52.5,13.4",
    "X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC",
    "X-MS-OLK-SENDER:mailto:assistant@example.org",
    "RELATED-TO;RELTYPE=X-CALENDARSERVER-RECURRENCE-SET:5B1F0C3E-AAAA-BBBB-CCCC-000000000001",
    "BEGIN:VALARM",
    "ACTION:DISPLAY",
    "DESCRIPTION:Reminder",
    "TRIGGER:-PT30M",
    "X-WR-ALARMUID:0D4E2C1A-1111-2222-3333-444455556666",
    "UID:0D4E2C1A-1111-2222-3333-444455556666",
    "ACKNOWLEDGED:20261120T100000Z",
    "END:VALARM",
    "END:VEVENT",
    "BEGIN:VEVENT",
    "UID:7E1C1A2B-0000-4C3D-9F00-ICLOUD",
    "DTSTAMP:20261120T101500Z",
    "RECURRENCE-ID;TZID=Europe/Berlin:20261204T140000",
    "DTSTART;TZID=Europe/Berlin:20261204T160000",
    "DTEND;TZID=Europe/Berlin:20261204T170000",
    "SUMMARY:Dentist",
    "TRANSP:TRANSPARENT",
    "X-RECURRENCE-EXCEPTION:True",
    "ORGANIZER;CN=Max Mustermann:mailto:max@icloud.com",
    "END:VEVENT",
    "END:VCALENDAR",
)


def parse(text: str) -> Calendar:
    return Calendar.from_ical(text)


def events(text: str) -> list:
    return parse(text).walk("VEVENT")


def master(text: str):
    return next(event for event in events(text) if "RECURRENCE-ID" not in event)


def as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def unfold(text: str) -> list[str]:
    """The content lines of ``text``, unfolded, whatever its line endings."""
    return re.sub(r"\r?\n[ \t]", "", text).replace("\r\n", "\n").strip("\n").split("\n")


def icloud_roundtrip(text: str, rng: random.Random | None = None) -> str:
    """``text`` as iCloud serves it back after a PUT: its additions, re-ordered properties, other folding.

    Deliberately string-level: it simulates another server's serialiser, not icalendar's.
    """
    rng = rng or random.Random(0)
    output: list[str] = []
    block: list[str] = []
    depth_names: list[str] = []
    for line in unfold(text):
        if line.startswith("BEGIN:"):
            if block:
                output.extend(block)
                block = []
            depth_names.append(line[6:])
            output.append(line)
            continue
        if line.startswith("END:"):
            name = depth_names.pop()
            if name == "VEVENT":
                stamp = next((p for p in block if p.startswith("DTSTAMP")), "DTSTAMP:20261121T000000Z")
                block += [
                    "DTSTAMP:20261122T111111Z",
                    stamp,
                    "SEQUENCE:1",
                    "LAST-MODIFIED:20261122T111111Z",
                    "CREATED:20261122T111111Z",
                    "X-APPLE-STRUCTURED-EVENT;VALUE=URI:   ",
                    "RELATED-TO;RELTYPE=X-CALENDARSERVER-RECURRENCE-SET:0F0F0F0F-1234",
                ]
                if any(p.startswith("RECURRENCE-ID") for p in block):
                    block.append("X-RECURRENCE-EXCEPTION:True")
                block = [re.sub(r"^(ATTENDEE|ORGANIZER)([;:])", r"\1;SCHEDULE-STATUS=1.2\2", p) for p in block]
                rng.shuffle(block)
            elif name == "VCALENDAR":
                block = [p for p in block if not p.startswith("PRODID")] + ["PRODID:-//Apple Inc.//iCloud//EN"]
            output.extend(block)
            block = []
            output.append(line)
            continue
        block.append(line)
    return "".join(fold(line, 73) + "\n" for line in output)


def fold(line: str, width: int) -> str:
    """``line`` folded every ``width`` characters (RFC 5545 folding, with CRLF)."""
    parts = [line[i : i + width] for i in range(0, len(line), width)] or [""]
    return "\r\n ".join(parts)


# --- identity helpers --------------------------------------------------------------------------------------


def test_object_uid_is_shared_by_master_and_overrides() -> None:
    assert object_uid(CRM_SERIES) == "class-42"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ics("BEGIN:VCALENDAR", "BEGIN:VEVENT", "DTSTART:20261201T090000Z", "END:VEVENT", "END:VCALENDAR"), "no UID"),
        (
            ics(
                "BEGIN:VCALENDAR",
                "BEGIN:VEVENT",
                "UID:a",
                "END:VEVENT",
                "BEGIN:VEVENT",
                "UID:b",
                "END:VEVENT",
                "END:VCALENDAR",
            ),
            "several UIDs: a, b",
        ),
        ("this is not a calendar", "not valid iCalendar"),
        ("", "not valid iCalendar"),
        (ics("BEGIN:VEVENT", "UID:a", "END:VEVENT"), "not a VCALENDAR"),
    ],
)
def test_object_uid_rejects_bad_objects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        object_uid(text)


def test_object_kind_reads_the_master() -> None:
    assert object_kind(CRM_APPOINTMENT) is EventKind.APPOINTMENT
    assert object_kind(CRM_ALL_DAY) is EventKind.APPOINTMENT  # absent means APPOINTMENT
    blocked_override_first = CRM_SERIES.replace("X-CALRELAY-KIND:APPOINTMENT", "X-CALRELAY-KIND:blocked")
    # The override comes second but the master's mark decides, whatever the order in the object.
    reordered = ics(*[line for line in unfold(blocked_override_first)])
    assert object_kind(reordered) is EventKind.BLOCKED


def test_object_kind_of_an_override_only_object_uses_the_first_event() -> None:
    text = ics(
        "BEGIN:VCALENDAR",
        "BEGIN:VEVENT",
        "UID:x",
        "RECURRENCE-ID:20261201T090000Z",
        "DTSTART:20261201T100000Z",
        "X-CALRELAY-KIND:BLOCKED",
        "END:VEVENT",
        "END:VCALENDAR",
    )
    assert object_kind(text) is EventKind.BLOCKED


def test_object_kind_and_origin_reject_unknown_values_and_non_events() -> None:
    with pytest.raises(ValueError, match="X-CALRELAY-KIND 'MEETING'"):
        object_kind(CRM_ALL_DAY.replace("TRANSP:TRANSPARENT", "X-CALRELAY-KIND:MEETING"))
    with pytest.raises(ValueError, match="X-CALRELAY-ORIGIN 'OUTLOOK'"):
        object_origin(CRM_ALL_DAY.replace("TRANSP:TRANSPARENT", "X-CALRELAY-ORIGIN:OUTLOOK"))
    todo = ics("BEGIN:VCALENDAR", "BEGIN:VTODO", "UID:t", "END:VTODO", "END:VCALENDAR")
    with pytest.raises(ValueError, match="no VEVENT"):
        object_kind(todo)


def test_object_origin() -> None:
    assert object_origin(CRM_APPOINTMENT) is Origin.CRM
    assert object_origin(CRM_ALL_DAY) is Origin.CRM  # absent means CRM
    assert object_origin(to_mirror(ICLOUD_EVENT)) is Origin.ICLOUD


def test_is_event_object() -> None:
    assert is_event_object(CRM_SERIES)
    assert not is_event_object(ics("BEGIN:VCALENDAR", "BEGIN:VTODO", "UID:t", "END:VTODO", "END:VCALENDAR"))
    assert not is_event_object(ics("BEGIN:VCALENDAR", "BEGIN:VJOURNAL", "UID:j", "END:VJOURNAL", "END:VCALENDAR"))
    with pytest.raises(ValueError, match="not valid iCalendar"):
        is_event_object("garbage")


@pytest.mark.parametrize("text", [CRM_SERIES, CRM_APPOINTMENT, CRM_ALL_DAY, ICLOUD_EVENT])
@pytest.mark.parametrize("chosen", [LinkPolicies(), LinkPolicies(all_day=AllDayMode.ALWAYS_BUSY,
                                                                 unanswered=UnansweredMode.FREE)])
def test_the_parse_of_a_pull_serves_the_uid_hash_and_mirror(text: str, chosen: LinkPolicies) -> None:
    calendar = parse_event_object(text)
    assert calendar is not None
    assert uid_and_hash(calendar) == (object_uid(text), content_hash(text))  # and left as it was parsed:
    mirror, digest = mirror_of(calendar, ["owner@icloud.test"], chosen)
    assert mirror == to_mirror(text, ["owner@icloud.test"], chosen)
    assert digest == content_hash(mirror)  # the mirror's status needs no second parse


def test_parse_event_object_skips_what_is_not_an_event() -> None:
    assert parse_event_object(ics("BEGIN:VCALENDAR", "BEGIN:VTODO", "UID:t", "END:VTODO", "END:VCALENDAR")) is None
    with pytest.raises(ValueError, match="not valid iCalendar"):
        parse_event_object("garbage")


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        ("booking-4711@crm.example", "booking-4711@crm.example.ics"),
        ("7E1C1A2B-0000-4C3D-9F00-ICLOUD", "7E1C1A2B-0000-4C3D-9F00-ICLOUD.ics"),
        ("a" * 200, "a" * 200 + ".ics"),
    ],
)
def test_remote_name_keeps_plain_uids(uid: str, expected: str) -> None:
    assert remote_name(uid) == expected


@pytest.mark.parametrize("uid", ["a/b", "../etc/passwd", ".hidden", "with space", "é@x", "a" * 201, "a?b#c", "a%2Fb"])
def test_remote_name_hashes_unsafe_uids(uid: str) -> None:
    name = remote_name(uid)
    assert re.fullmatch(r"[0-9a-f]{64}\.ics", name)
    assert remote_name(uid) == name  # deterministic: the same UID always maps to the same href


def test_remote_name_distinguishes_uids_and_refuses_empty() -> None:
    assert remote_name("a/b") != remote_name("a/c")
    with pytest.raises(ValueError, match="empty UID"):
        remote_name("")


# --- push -------------------------------------------------------------------------------------------------


def test_to_icloud_mutes_scheduling_and_keeps_existing_parameters() -> None:
    event = master(to_icloud(CRM_APPOINTMENT))
    attendee = event["ATTENDEE"]
    assert str(attendee) == "mailto:jane@example.org"
    assert dict(attendee.params) == {
        "CN": "Doe, Jane",
        "ROLE": "REQ-PARTICIPANT",
        "PARTSTAT": "NEEDS-ACTION",
        "RSVP": "TRUE",
        "SCHEDULE-AGENT": "CLIENT",
    }
    assert event["ORGANIZER"].params["SCHEDULE-AGENT"] == "CLIENT"


def test_to_icloud_overrides_a_server_schedule_agent_on_every_component() -> None:
    for event in events(to_icloud(CRM_SERIES)):
        for person in as_list(event.get("ATTENDEE")) + as_list(event.get("ORGANIZER")):
            assert person.params["SCHEDULE-AGENT"] == "CLIENT"


def test_to_icloud_strips_method_and_calrelay_properties() -> None:
    pushed = to_icloud(CRM_APPOINTMENT)
    assert "METHOD" not in parse(pushed)
    assert "X-CALRELAY" not in pushed
    assert "VERSION:2.0" in pushed
    assert "PRODID:-//Acme CRM//Bookings//EN" in pushed


def test_to_icloud_adds_version_and_prodid_when_missing() -> None:
    bare = "\r\n".join(line for line in unfold(CRM_ALL_DAY) if not line.startswith(("VERSION", "PRODID")))
    calendar = parse(to_icloud(bare))
    assert str(calendar["VERSION"]) == "2.0"
    assert "calrelay" in str(calendar["PRODID"])


def test_to_icloud_gives_a_timed_event_an_end_equal_to_its_start() -> None:
    event = master(to_icloud(CRM_APPOINTMENT))
    assert event["DTEND"].params["TZID"] == "Europe/Paris"
    assert event.decoded("DTEND") == event.decoded("DTSTART")


def test_to_icloud_gives_an_all_day_event_the_next_day() -> None:
    event = master(to_icloud(CRM_ALL_DAY))
    assert event.decoded("DTEND") == date(2026, 12, 25)
    assert "DTEND;VALUE=DATE:20261225" in unfold(to_icloud(CRM_ALL_DAY))


def test_to_icloud_keeps_duration() -> None:
    text = CRM_ALL_DAY.replace("DTSTART;VALUE=DATE:20261224", "DTSTART:20261224T090000Z\r\nDURATION:PT45M")
    event = master(to_icloud(text))
    assert "DTEND" not in event
    assert event.decoded("DURATION") == timedelta(minutes=45)


def test_to_icloud_adds_missing_timezones_and_keeps_existing_ones() -> None:
    pushed = parse(to_icloud(CRM_APPOINTMENT))
    assert [str(tz["TZID"]) for tz in pushed.walk("VTIMEZONE")] == ["Europe/Paris"]
    assert pushed.get_missing_tzids() == set()
    series = parse(to_icloud(CRM_SERIES))
    (zone,) = series.walk("VTIMEZONE")
    # The CRM's own definition is kept as it was, not replaced by a generated one.
    assert [str(part["TZNAME"]) for part in zone.subcomponents] == ["EST", "EDT"]


def test_to_icloud_keeps_series_and_overrides_together_and_unchanged() -> None:
    pushed = to_icloud(CRM_SERIES)
    main, moved = events(pushed)
    assert object_uid(pushed) == "class-42"
    assert main["RRULE"].to_ical() == b"FREQ=WEEKLY;COUNT=10;BYDAY=WE"
    assert main["EXDATE"].to_ical() == b"20261216T180000"
    assert main["EXDATE"].params["TZID"] == "America/New_York"
    assert moved.decoded("RECURRENCE-ID") == master(CRM_SERIES).decoded("DTSTART") + timedelta(days=7)
    assert str(moved["SUMMARY"]) == "Yoga class (late)"


def test_to_icloud_keeps_alarms() -> None:
    (alarm,) = parse(to_icloud(CRM_APPOINTMENT)).walk("VALARM")
    assert alarm.decoded("TRIGGER") == timedelta(minutes=-15)


@pytest.mark.parametrize("text", [CRM_APPOINTMENT, CRM_SERIES, CRM_ALL_DAY])
def test_to_icloud_is_idempotent(text: str) -> None:
    once = to_icloud(text)
    assert to_icloud(once) == once


def test_to_icloud_refuses_objects_it_cannot_relay() -> None:
    with pytest.raises(ValueError, match="no VEVENT"):
        to_icloud(ics("BEGIN:VCALENDAR", "BEGIN:VTODO", "UID:t", "END:VTODO", "END:VCALENDAR"))
    with pytest.raises(ValueError, match="has no DTSTART"):
        to_icloud(ics("BEGIN:VCALENDAR", "BEGIN:VEVENT", "UID:x", "SUMMARY:when?", "END:VEVENT", "END:VCALENDAR"))
    with pytest.raises(ValueError, match="DTSTART"):
        to_icloud(CRM_ALL_DAY.replace("DTSTART;VALUE=DATE:20261224", "DTSTART:tomorrow"))


# --- pull -------------------------------------------------------------------------------------------------


def test_to_mirror_marks_every_event_as_a_blocked_slot_from_icloud() -> None:
    mirrored = to_mirror(ICLOUD_EVENT)
    for event in events(mirrored):
        assert str(event["X-CALRELAY-KIND"]) == "BLOCKED"
        assert str(event["X-CALRELAY-ORIGIN"]) == "ICLOUD"
    assert object_kind(mirrored) is EventKind.BLOCKED


def test_to_mirror_drops_people_and_their_addresses() -> None:
    mirrored = to_mirror(ICLOUD_EVENT)
    assert "mailto:" not in mirrored.lower()
    for name in ("ATTENDEE", "ORGANIZER", "CONTACT", "X-MS-OLK-SENDER"):
        assert all(name not in event for event in events(mirrored))


def test_to_mirror_drops_apple_housekeeping_and_alarms() -> None:
    mirrored = to_mirror(ICLOUD_EVENT)
    assert "X-APPLE-" not in mirrored
    assert "X-RECURRENCE-EXCEPTION" not in mirrored
    assert "RELATED-TO" not in mirrored
    assert "VALARM" not in mirrored
    assert len(as_list(master(mirrored)["DTSTAMP"])) == 1
    assert master(mirrored).decoded("DTSTAMP") == datetime.fromisoformat("2026-11-20T10:15:00+00:00")


def test_to_mirror_keeps_times_recurrence_and_content() -> None:
    mirrored = to_mirror(ICLOUD_EVENT)
    main, moved = events(mirrored)
    assert main["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert main["DTSTART"].to_ical() == b"20261203T140000"
    assert main["DTEND"].to_ical() == b"20261203T150000"
    assert main["RRULE"].to_ical() == b"FREQ=DAILY;COUNT=5"
    assert main["EXDATE"].to_ical() == b"20261205T140000"
    assert (str(main["SUMMARY"]), str(main["LOCATION"]), str(main["DESCRIPTION"])) == (
        "Dentist",
        "Hauptstr. 1, Berlin",
        "Check-up",
    )
    assert (str(main["STATUS"]), str(main["TRANSP"])) == ("CONFIRMED", "OPAQUE")
    assert moved["RECURRENCE-ID"].to_ical() == b"20261204T140000"
    assert str(moved["TRANSP"]) == "TRANSPARENT"
    (zone,) = parse(mirrored).walk("VTIMEZONE")
    assert str(zone["TZID"]) == "Europe/Berlin"
    assert "METHOD" not in parse(mirrored)


def test_to_mirror_overrides_calrelay_marks_already_present() -> None:
    # What calrelay pushed comes back with no marks; anything else claiming to be an appointment is still blocked.
    text = ICLOUD_EVENT.replace(
        "SUMMARY:Dentist\r\nLOCATION", "SUMMARY:Dentist\r\nX-CALRELAY-KIND:APPOINTMENT\r\nLOCATION"
    )
    main = master(to_mirror(text))
    assert str(main["X-CALRELAY-KIND"]) == "BLOCKED"


def test_to_mirror_is_idempotent_and_hash_neutral() -> None:
    once = to_mirror(ICLOUD_EVENT)
    assert to_mirror(once) == once
    # The mirror differs from the source only by what it drops on purpose.
    lines = unfold(ICLOUD_EVENT)
    alarm = slice(lines.index("BEGIN:VALARM"), lines.index("END:VALARM") + 1)
    del lines[alarm]
    people = ("ORGANIZER", "ATTENDEE", "CONTACT", "X-MS-OLK-SENDER")
    assert content_hash(once) == content_hash(ics(*[line for line in lines if not line.startswith(people)]))


# --- merge ------------------------------------------------------------------------------------------------


def edited_in_icloud(text: str, *replacements: tuple[str, str]) -> str:
    """The pushed form of ``text`` after iCloud's round-trip and a user's edits."""
    served = unfold(icloud_roundtrip(to_icloud(text)))
    joined = "\n".join(served)
    for old, new in replacements:
        assert old in joined, old
        joined = joined.replace(old, new)
    return joined + "\n"


def test_merge_takes_content_from_icloud() -> None:
    icloud = edited_in_icloud(
        CRM_APPOINTMENT,
        ("DTSTART;TZID=Europe/Paris:20261201T090000", "DTSTART;TZID=Europe/Paris:20261202T100000"),
        ("DTEND;TZID=Europe/Paris:20261201T090000", "DTEND;TZID=Europe/Paris:20261202T110000"),
        ("SUMMARY:Consultation\\, first visit", "SUMMARY:Consultation (moved)"),
        ("LOCATION:Room 2", "LOCATION:Room 5\nSTATUS:TENTATIVE\nTRANSP:TRANSPARENT"),
    )
    merged = master(merge_icloud_edit(CRM_APPOINTMENT, icloud))
    assert merged["DTSTART"].to_ical() == b"20261202T100000"
    assert merged["DTEND"].to_ical() == b"20261202T110000"
    assert str(merged["SUMMARY"]) == "Consultation (moved)"
    assert str(merged["LOCATION"]) == "Room 5"
    assert (str(merged["STATUS"]), str(merged["TRANSP"])) == ("TENTATIVE", "TRANSPARENT")


def test_merge_keeps_the_crm_attendees_marks_and_uid_exactly() -> None:
    icloud = edited_in_icloud(
        CRM_APPOINTMENT,
        ("PARTSTAT=NEEDS-ACTION", "PARTSTAT=ACCEPTED"),
        ("SUMMARY:Consultation\\, first visit", "SUMMARY:Changed"),
    )
    merged_text = merge_icloud_edit(CRM_APPOINTMENT, icloud)
    merged = master(merged_text)
    original = master(CRM_APPOINTMENT)
    assert merged["ATTENDEE"].to_ical() == original["ATTENDEE"].to_ical()
    assert dict(merged["ATTENDEE"].params) == dict(original["ATTENDEE"].params)  # no SCHEDULE-AGENT, no status
    assert dict(merged["ORGANIZER"].params) == {"CN": "Front Desk"}
    assert str(merged["X-CALRELAY-KIND"]) == "APPOINTMENT"
    assert str(merged["X-CALRELAY-ORIGIN"]) == "CRM"
    assert str(merged["UID"]) == "booking-4711@crm.example"
    assert str(merged["DTSTAMP"].to_ical().decode()) == "20261120T080000Z"
    assert "X-APPLE" not in merged_text and "RELATED-TO" not in merged_text and "SEQUENCE" not in merged_text
    assert "METHOD" not in parse(merged_text)
    (alarm,) = merged.walk("VALARM")
    assert alarm.decoded("TRIGGER") == timedelta(minutes=-15)


def test_merge_removes_content_deleted_in_icloud() -> None:
    icloud = edited_in_icloud(CRM_APPOINTMENT, ("LOCATION:Room 2\n", ""), ("DESCRIPTION:", "X-GONE:"))
    merged = master(merge_icloud_edit(CRM_APPOINTMENT, icloud))
    assert "LOCATION" not in merged
    assert "DESCRIPTION" not in merged


def test_merge_follows_icloud_overrides() -> None:
    icloud = edited_in_icloud(
        CRM_SERIES,
        (
            "EXDATE;TZID=America/New_York:20261216T180000",
            "EXDATE;TZID=America/New_York:20261216T180000,20261223T180000",
        ),
        ("SUMMARY:Yoga class (late)", "SUMMARY:Yoga class (later)"),
    )
    # The user also moves another occurrence in iCloud: a new override the CRM never had.
    new_override = "\n".join(
        [
            "BEGIN:VEVENT",
            "UID:class-42",
            "DTSTAMP:20261122T000000Z",
            "RECURRENCE-ID;TZID=America/New_York:20261230T180000",
            "DTSTART;TZID=America/New_York:20261230T170000",
            "DTEND;TZID=America/New_York:20261230T180000",
            "SUMMARY:Yoga class (early)",
            "X-RECURRENCE-EXCEPTION:True",
            "END:VEVENT",
        ]
    )
    icloud = icloud.replace("END:VCALENDAR", new_override + "\nEND:VCALENDAR")
    merged_text = merge_icloud_edit(CRM_SERIES, icloud)
    main, late, early = events(merged_text)
    assert [d.to_ical() for exdate in as_list(main["EXDATE"]) for d in exdate.dts] == [
        b"20261216T180000",
        b"20261223T180000",
    ]
    assert str(late["SUMMARY"]) == "Yoga class (later)"
    assert late["ATTENDEE"].params == {"CN": "Sam"}
    # The new override inherits the CRM master's own data, but not its recurrence.
    assert str(early["SUMMARY"]) == "Yoga class (early)"
    assert str(early["X-CALRELAY-KIND"]) == "APPOINTMENT"
    assert early["ATTENDEE"].params == {"CN": "Sam", "SCHEDULE-AGENT": "SERVER"}
    assert "RRULE" not in early and "EXDATE" not in early
    assert "X-RECURRENCE-EXCEPTION" not in merged_text
    assert [str(tz["TZID"]) for tz in parse(merged_text).walk("VTIMEZONE")] == ["America/New_York"]


def test_merge_matches_overrides_by_instant_whatever_their_time_zone() -> None:
    # 2026-12-09 18:00 in New York is 23:00 UTC: the same occurrence, written the way another client might.
    icloud = edited_in_icloud(
        CRM_SERIES,
        ("RECURRENCE-ID;TZID=America/New_York:20261209T180000", "RECURRENCE-ID:20261209T230000Z"),
        ("SUMMARY:Yoga class (late)", "SUMMARY:Yoga class (later)"),
    )
    _, late = events(merge_icloud_edit(CRM_SERIES, icloud))
    assert str(late["SUMMARY"]) == "Yoga class (later)"
    assert late["ATTENDEE"].params == {"CN": "Sam"}  # the override's own CRM data, not the master's


def test_merge_of_an_unchanged_roundtrip_keeps_the_hash() -> None:
    for text in (CRM_APPOINTMENT, CRM_SERIES, CRM_ALL_DAY):
        merged = merge_icloud_edit(text, icloud_roundtrip(to_icloud(text)))
        assert content_hash(merged) == content_hash(text)
        assert object_kind(merged) is object_kind(text)


def test_merge_refuses_different_events() -> None:
    with pytest.raises(ValueError, match="different events"):
        merge_icloud_edit(CRM_APPOINTMENT, to_icloud(CRM_SERIES))


# --- content hash ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [CRM_APPOINTMENT, CRM_SERIES, CRM_ALL_DAY])
def test_hash_survives_the_push_and_icloud_roundtrip(text: str) -> None:
    pushed = to_icloud(text)
    assert content_hash(pushed) == content_hash(text)
    for seed in range(5):
        assert content_hash(icloud_roundtrip(pushed, random.Random(seed))) == content_hash(text)


def test_hash_is_a_sha256_hex_digest() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", content_hash(CRM_SERIES))


SERIES_LINES = unfold(CRM_SERIES)
MASTER_AT, OVERRIDE_AT = [i for i, line in enumerate(SERIES_LINES) if line == "BEGIN:VEVENT"]


def variant(*replacements: tuple[str, str]) -> str:
    text = "\n".join(SERIES_LINES) + "\n"
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


HASH_INVARIANT = {
    "LF line endings": variant(),
    "folded every 10 characters": "".join(fold(line, 10) + "\r\n" for line in SERIES_LINES),
    "parameter order and case": variant(
        ("ATTENDEE;CN=Sam;SCHEDULE-AGENT=SERVER:", "ATTENDEE;schedule-agent=CLIENT;schedule-status=2.0;cn=Sam:")
    ),
    "mailto scheme case": variant(("ATTENDEE;CN=Sam:mailto:", "ATTENDEE;CN=Sam:MAILTO:")),
    "timestamps and sequence": variant(
        ("DTSTAMP:20261120T080000Z", "DTSTAMP:20270101T000000Z\nLAST-MODIFIED:20270101T000000Z\nSEQUENCE:9"),
        ("UID:class-42", "UID:class-42\nCREATED:20200101T000000Z"),
    ),
    "server metadata": variant(
        ("PRODID:-//Acme CRM//Bookings//EN", "PRODID:-//Apple//x//EN\nMETHOD:PUBLISH\nCALSCALE:GREGORIAN"),
        ("SUMMARY:Yoga class\n", "SUMMARY:Yoga class\nX-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC\n"),
    ),
    "calrelay marks": variant(("X-CALRELAY-KIND:APPOINTMENT", "X-CALRELAY-KIND:BLOCKED\nX-CALRELAY-ORIGIN:ICLOUD")),
    "recurrence-set link": variant(
        ("SUMMARY:Yoga class\n", "SUMMARY:Yoga class\nRELATED-TO;RELTYPE=X-CALENDARSERVER-RECURRENCE-SET:abc\n")
    ),
    "no VTIMEZONE": "\n".join(
        SERIES_LINES[: SERIES_LINES.index("BEGIN:VTIMEZONE")] + SERIES_LINES[SERIES_LINES.index("END:VTIMEZONE") + 1 :]
    ),
    "RRULE part order": variant(("RRULE:FREQ=WEEKLY;BYDAY=WE;COUNT=10", "RRULE:COUNT=10;BYDAY=WE;FREQ=WEEKLY")),
    "explicit VALUE=DATE-TIME": variant(
        (
            "DTSTART;TZID=America/New_York:20261202T180000",
            "DTSTART;VALUE=DATE-TIME;TZID=America/New_York:20261202T180000",
        )
    ),
    "overrides first": "\n".join(
        SERIES_LINES[:MASTER_AT]
        + SERIES_LINES[OVERRIDE_AT:-1]
        + SERIES_LINES[MASTER_AT:OVERRIDE_AT]
        + ["END:VCALENDAR"]
    ),
}


@pytest.mark.parametrize("name", sorted(HASH_INVARIANT))
def test_hash_ignores(name: str) -> None:
    assert content_hash(HASH_INVARIANT[name]) == content_hash(CRM_SERIES)


def test_hash_ignores_the_case_of_enumerated_parameter_values() -> None:
    lower = variant(("ATTENDEE;CN=Sam:", "ATTENDEE;CN=Sam;PARTSTAT=accepted;ROLE=chair:"))
    upper = variant(("ATTENDEE;CN=Sam:", "ATTENDEE;ROLE=CHAIR;PARTSTAT=ACCEPTED;CN=Sam:"))
    assert content_hash(lower) == content_hash(upper) != content_hash(CRM_SERIES)
    # CN is free text: its case is content.
    assert content_hash(variant(("ATTENDEE;CN=Sam:", "ATTENDEE;CN=SAM:"))) != content_hash(CRM_SERIES)


def test_hash_ignores_alarm_housekeeping_but_not_alarms() -> None:
    base = content_hash(CRM_APPOINTMENT)
    acknowledged = CRM_APPOINTMENT.replace(
        "TRIGGER:-PT15M", "TRIGGER:-PT15M\r\nACKNOWLEDGED:20261201T080000Z\r\nX-WR-ALARMUID:1\r\nUID:1"
    )
    assert content_hash(acknowledged) == base
    assert content_hash(CRM_APPOINTMENT.replace("TRIGGER:-PT15M", "TRIGGER:-PT30M")) != base


def test_hash_treats_combined_and_split_exdates_alike() -> None:
    two_lines = variant(
        (
            "EXDATE;TZID=America/New_York:20261216T180000",
            "EXDATE;TZID=America/New_York:20261216T180000\nEXDATE;TZID=America/New_York:20261223T180000",
        )
    )
    combined = variant(
        ("EXDATE;TZID=America/New_York:20261216T180000", "EXDATE;TZID=America/New_York:20261223T180000,20261216T180000")
    )
    assert content_hash(two_lines) == content_hash(combined) != content_hash(CRM_SERIES)


HASH_SENSITIVE = {
    "start time": ("DTSTART;TZID=America/New_York:20261202T180000", "DTSTART;TZID=America/New_York:20261202T183000"),
    "end time": ("DTEND;TZID=America/New_York:20261202T190000", "DTEND;TZID=America/New_York:20261202T191500"),
    "time zone": ("DTSTART;TZID=America/New_York:20261202T180000", "DTSTART;TZID=Europe/Paris:20261202T180000"),
    "summary": ("SUMMARY:Yoga class\n", "SUMMARY:Yoga Class\n"),
    "location": ("SUMMARY:Yoga class\n", "SUMMARY:Yoga class\nLOCATION:Studio B\n"),
    "description": ("SUMMARY:Yoga class\n", "SUMMARY:Yoga class\nDESCRIPTION:Bring a mat\n"),
    "rrule": ("RRULE:FREQ=WEEKLY;BYDAY=WE;COUNT=10", "RRULE:FREQ=WEEKLY;BYDAY=WE;COUNT=11"),
    "exdate": ("EXDATE;TZID=America/New_York:20261216T180000", "EXDATE;TZID=America/New_York:20261223T180000"),
    "status": ("SUMMARY:Yoga class\n", "SUMMARY:Yoga class\nSTATUS:CANCELLED\n"),
    "transp": ("SUMMARY:Yoga class\n", "SUMMARY:Yoga class\nTRANSP:TRANSPARENT\n"),
    "override time": ("DTSTART;TZID=America/New_York:20261209T190000", "DTSTART;TZID=America/New_York:20261209T191000"),
    "attendee": ("ATTENDEE;CN=Sam:mailto:sam", "ATTENDEE;CN=Sam:mailto:sammy"),
}


@pytest.mark.parametrize("name", sorted(HASH_SENSITIVE))
def test_hash_sees(name: str) -> None:
    assert content_hash(variant(HASH_SENSITIVE[name])) != content_hash(CRM_SERIES)


def test_hash_sees_all_day_versus_timed() -> None:
    timed = CRM_ALL_DAY.replace("DTSTART;VALUE=DATE:20261224", "DTSTART:20261224T000000")
    assert content_hash(timed) != content_hash(CRM_ALL_DAY)


def test_hash_reads_a_missing_end_as_the_implied_one() -> None:
    explicit = CRM_ALL_DAY.replace(
        "DTSTART;VALUE=DATE:20261224", "DTSTART;VALUE=DATE:20261224\r\nDTEND;VALUE=DATE:20261225"
    )
    longer = explicit.replace("DTEND;VALUE=DATE:20261225", "DTEND;VALUE=DATE:20261226")
    assert content_hash(explicit) == content_hash(CRM_ALL_DAY) != content_hash(longer)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("BEGIN:VCALENDAR\r\nnonsense\r\n", "not valid iCalendar"),
        (CRM_ALL_DAY.replace("SUMMARY:", "DTSTART;VALUE=DATE:20261225\r\nSUMMARY:"), "more than one DTSTART"),
        (CRM_ALL_DAY.replace("DTSTART;VALUE=DATE:20261224", "DTSTART;VALUE=DATE:202612"), "DTSTART"),
        (CRM_SERIES.replace("TZID:America/New_York\r\n", ""), "VTIMEZONE has no TZID"),
        (
            CRM_SERIES.replace("TZID:America/New_York\r\n", "TZID:America/New_York\r\nTZID:Europe/Paris\r\n"),
            "not valid",
        ),
    ],
)
def test_transforms_reject_malformed_objects(text: str, message: str) -> None:
    for transform in (content_hash, to_icloud, to_mirror):
        with pytest.raises(ValueError, match=message):
            transform(text)


def test_hash_rejects_objects_without_events() -> None:
    with pytest.raises(ValueError, match="no VEVENT"):
        content_hash(ics("BEGIN:VCALENDAR", "BEGIN:VTODO", "UID:t", "END:VTODO", "END:VCALENDAR"))


# --- property tests ------------------------------------------------------------------------------------------

ZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC"]
TEXT = st.text(alphabet=st.sampled_from("abcXYZ 019,;:\\é-"), min_size=1, max_size=40).map(str.strip).filter(bool)


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")


@st.composite
def appointments(draw: st.DrawFn) -> dict:
    """The content of a random CRM appointment, as fields that :func:`render` writes out."""
    all_day = draw(st.booleans())
    day = draw(st.dates(min_value=date(2026, 1, 1), max_value=date(2030, 12, 31)))
    start = datetime.combine(day, datetime.min.time()) + timedelta(minutes=15 * draw(st.integers(0, 95)))
    return {
        "all_day": all_day,
        "start": start,
        "minutes": draw(st.integers(15, 240)),
        "zone": draw(st.sampled_from(ZONES)),
        "summary": draw(TEXT),
        "location": draw(st.none() | TEXT),
        "description": draw(st.none() | TEXT),
        "count": draw(st.none() | st.integers(2, 20)),
        "exdays": draw(st.lists(st.integers(1, 19), max_size=3, unique=True)),
        "status": draw(st.sampled_from([None, "CONFIRMED", "TENTATIVE", "CANCELLED"])),
        "transp": draw(st.sampled_from([None, "OPAQUE", "TRANSPARENT"])),
        "attendees": draw(st.lists(st.sampled_from(["ann", "bob", "cyd"]), max_size=3, unique=True)),
    }


def when(fields: dict, moment: datetime) -> str:
    """A date/time property's parameters and value for ``moment`` in the appointment's style."""
    if fields["all_day"]:
        return f";VALUE=DATE:{moment:%Y%m%d}"
    if fields["zone"] == "UTC":
        return f":{moment:%Y%m%dT%H%M%S}Z"
    return f";TZID={fields['zone']}:{moment:%Y%m%dT%H%M%S}"


def render(fields: dict) -> list[str]:
    """The unfolded lines of the appointment described by ``fields``."""
    start = fields["start"]
    end = start + (timedelta(days=1) if fields["all_day"] else timedelta(minutes=fields["minutes"]))
    lines = [
        "UID:prop-1@crm",
        "DTSTAMP:20261120T080000Z",
        f"DTSTART{when(fields, start)}",
        f"DTEND{when(fields, end)}",
        f"SUMMARY:{escape(fields['summary'])}",
        "X-CALRELAY-KIND:APPOINTMENT",
    ]
    for name in ("location", "description"):
        if fields[name] is not None:
            lines.append(f"{name.upper()}:{escape(fields[name])}")
    for name in ("status", "transp"):
        if fields[name] is not None:
            lines.append(f"{name.upper()}:{fields[name]}")
    if fields["count"]:
        lines.append(f"RRULE:FREQ=DAILY;INTERVAL=1;COUNT={fields['count']}")
        lines += [f"EXDATE{when(fields, start + timedelta(days=day))}" for day in fields["exdays"]]
    lines += [
        f"ATTENDEE;CN={who.title()};PARTSTAT=NEEDS-ACTION:mailto:{who}@example.org" for who in fields["attendees"]
    ]
    return ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "BEGIN:VEVENT", *lines, "END:VEVENT", "END:VCALENDAR"]


def reparametrise(match: re.Match[str]) -> str:
    """An ATTENDEE's parameters in another order and case (names and enumerated values are case-insensitive)."""
    return f"{match[1]};partstat={match[3].lower()};cn={match[2]}:"


@st.composite
def serialisations(draw: st.DrawFn, lines: list[str]) -> str:
    """``lines`` written as another client or server might: re-ordered, re-folded, other case and endings."""
    rng = draw(st.randoms(use_true_random=False))
    body = lines[4:-2]
    rng.shuffle(body)
    if draw(st.booleans()):
        body = [re.sub(r"^(ATTENDEE);CN=(\w+);PARTSTAT=([-A-Z]+):", reparametrise, line) for line in body]
    if draw(st.booleans()):
        body += ["DTSTAMP:20261201T000000Z", "X-APPLE-STRUCTURED-EVENT;VALUE=URI:  ", "SEQUENCE:3"]
        body += ["RELATED-TO;RELTYPE=X-CALENDARSERVER-RECURRENCE-SET:F00", "LAST-MODIFIED:20261201T000000Z"]
    width = draw(st.integers(5, 75))
    ending = draw(st.sampled_from(["\r\n", "\n"]))
    return "".join(fold(line, width).replace("\r\n", ending) + ending for line in [*lines[:4], *body, *lines[-2:]])


EDITS = ["start", "end", "summary", "location", "description", "count", "exdate", "status", "transp", "zone"]


def edit(fields: dict, what: str, data: st.DataObject) -> dict:
    """``fields`` with one real content change of kind ``what``."""
    changed = dict(fields)
    if what == "start":
        shift = timedelta(days=1) if fields["all_day"] else timedelta(minutes=data.draw(st.integers(1, 600)))
        changed["start"] = fields["start"] + shift
    elif what == "end":
        changed["all_day"], changed["minutes"] = False, fields["minutes"] + data.draw(st.integers(1, 60))
        if fields["all_day"]:
            changed["start"] = fields["start"] + timedelta(days=1)
    elif what in ("summary", "location", "description"):
        changed[what] = data.draw(TEXT.filter(lambda text: text != fields[what]))
    elif what == "count":
        changed["count"] = (fields["count"] or 1) + 1
    elif what == "exdate":
        changed["count"] = fields["count"] or 20
        changed["exdays"] = [
            *fields["exdays"],
            data.draw(st.integers(1, 19).filter(lambda d: d not in fields["exdays"])),
        ]
    elif what in ("status", "transp"):
        choices = ["CONFIRMED", "CANCELLED"] if what == "status" else ["OPAQUE", "TRANSPARENT"]
        changed[what] = data.draw(st.sampled_from([c for c in choices if c != (fields[what] or choices[0])]))
    else:
        changed["all_day"] = False
        changed["zone"] = data.draw(st.sampled_from([z for z in ZONES if z != fields["zone"]]))
    return changed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=appointments(), data=st.data())
def test_hash_property_reserialisation_keeps_it(fields: dict, data: st.DataObject) -> None:
    lines = render(fields)
    original = "\r\n".join(lines) + "\r\n"
    expected = content_hash(original)
    assert content_hash(data.draw(serialisations(lines))) == expected
    pushed = to_icloud(original)
    assert content_hash(pushed) == expected
    assert content_hash(icloud_roundtrip(pushed, random.Random(data.draw(st.integers())))) == expected
    assert to_icloud(pushed) == pushed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=appointments(), what=st.sampled_from(EDITS), data=st.data())
def test_hash_property_content_edits_change_it(fields: dict, what: str, data: st.DataObject) -> None:
    before = content_hash("\r\n".join(render(fields)) + "\r\n")
    edited = render(edit(fields, what, data))
    assert content_hash(data.draw(serialisations(edited))) != before


def test_to_mirror_keeps_an_owner_declined_occurrence_as_free():
    text = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:d\r\nDTSTAMP:20260101T000000Z\r\n"
        "DTSTART:20260102T100000Z\r\nDTEND:20260102T110000Z\r\nORGANIZER:mailto:boss@work.test\r\n"
        "ATTENDEE;PARTSTAT=DECLINED:mailto:Demo@iCloud.test\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    assert "TRANSP:TRANSPARENT" in to_mirror(text, ["demo@icloud.test"])
    assert "TRANSP" not in to_mirror(text, ["someone@else.test"])
    assert "TRANSP" not in to_mirror(text.replace("DECLINED", "ACCEPTED"), ["demo@icloud.test"])
