"""Generated families of hostile calendar objects: each is refused with 400 and a message, the store unchanged."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.helpers import event
from tests.hostile.conftest import START, send, stored

CT = {"Content-Type": "text/calendar; charset=utf-8"}


def vevent(body: str, extra_components: str = "") -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile//EN\r\n" + extra_components
        + "BEGIN:VEVENT\r\nUID:h\r\nDTSTAMP:20261121T000000Z\r\n" + body + "END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


def runaway_cases() -> dict[str, tuple[bytes, str]]:
    cases = {}
    for freq in ("SECONDLY", "MINUTELY"):
        for interval in (1, 7, 59):
            for end in ("", ";COUNT=10", ";UNTIL=20261201T100000Z"):
                rule = f"RRULE:FREQ={freq};INTERVAL={interval}{end}\r\n"
                body = f"DTSTART:20261201T090000Z\r\nDTEND:20261201T090001Z\r\n{rule}"
                cases[f"{freq}-{interval}{end or '-endless'}"] = (vevent(body), f"FREQ={freq}")
    for count in (20_001, 10**9, 10**30):
        cases[f"COUNT={count}"] = (vevent(f"DTSTART:20261201T090000Z\r\nRRULE:FREQ=DAILY;COUNT={count}\r\n"),
            "COUNT|Too many recurrence rule entries",  # Radicale's own check may answer first
        )
    minutes = ",".join(str(m) for m in range(0, 60, 5))
    hours = ",".join(str(h) for h in range(24))
    cases["dense BYMINUTE"] = (
        vevent(f"DTSTART:20261201T090000Z\r\nRRULE:FREQ=DAILY;BYHOUR={hours};BYMINUTE={minutes}\r\n"),
        "instances in 28 days",
    )
    cases["dense only in December"] = (
        vevent(f"DTSTART:20260101T090000Z\r\nRRULE:FREQ=YEARLY;BYMONTH=12;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR={hours};BYMINUTE={minutes}\r\n"),
        "instances in 28 days",
    )
    return cases


def malformed_cases() -> dict[str, tuple[bytes, str]]:
    good = event("m", START).encode()
    cases = {
        "DTEND before DTSTART": (vevent("DTSTART:20261201T100000Z\r\nDTEND:20261201T090000Z\r\n"), "before DTSTART"),
        "DTEND before DTSTART (dates)": (
            vevent("DTSTART;VALUE=DATE:20261202\r\nDTEND;VALUE=DATE:20261201\r\n"), "before DTSTART"
        ),
        "nested VCALENDAR": (
            vevent("DTSTART:20261201T090000Z\r\n", "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"),
            "VCALENDAR inside|Multiple component types",
        ),
    }
    for prop in ("DTSTART", "DTEND", "EXDATE", "DTSTAMP"):
        body = {
            "DTSTART": "DTSTART:00000101T090000Z\r\n",
            "DTEND": "DTSTART:20261201T090000Z\r\nDTEND:00000101T090000Z\r\n",
            "EXDATE": "DTSTART:20261201T090000Z\r\nRRULE:FREQ=DAILY;COUNT=3\r\nEXDATE:00000101T090000Z\r\n",
            "DTSTAMP": "DTSTART:20261201T090000Z\r\nDTSTAMP:00001201T090000Z\r\n",
        }[prop]
        cases[f"year 0000 in {prop}"] = (vevent(body), "year 0000")
    for position in (0, len(good) // 2, len(good) - 1):
        cases[f"NUL at {position}"] = (good[:position] + b"\x00" + good[position:], "NUL")
    for bad in (b"\xff", b"\xc3\x28", b"\xed\xa0\x80"):
        cases[f"invalid UTF-8 {bad.hex()}"] = (good.replace(b"SUMMARY:Call", b"SUMMARY:" + bad), "UTF-8")
    zones = "".join(
        f"BEGIN:VTIMEZONE\r\nTZID:Z{n}\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\nTZOFFSETFROM:+0000\r\n"
        "TZOFFSETTO:+0000\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n" for n in range(21)
    )
    cases["21 VTIMEZONEs"] = (vevent("DTSTART:20261201T090000Z\r\n", zones), "VTIMEZONE")
    many_zones = zones.replace("TZID:Z", "TZID:Y") * 250  # 5,250 zones: refused before parsing
    cases["5,250 VTIMEZONEs"] = (vevent("DTSTART:20261201T090000Z\r\n", many_zones), "VTIMEZONE")
    alarms = "BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT5M\r\nEND:VALARM\r\n" * 4001
    cases["4,001 alarms"] = (vevent(f"DTSTART:20261201T090000Z\r\n{alarms}"), "BEGIN: lines")
    overrides = "".join(
        f"BEGIN:VEVENT\r\nUID:h\r\nDTSTAMP:20261121T000000Z\r\nRECURRENCE-ID:{START + timedelta(days=n):%Y%m%dT%H%M%SZ}"
        f"\r\nDTSTART:{START + timedelta(days=n):%Y%m%dT%H%M%SZ}\r\nEND:VEVENT\r\n" for n in range(1, 1001)
    )
    cases["1001 components"] = (
        vevent("DTSTART:20261201T090000Z\r\nRRULE:FREQ=DAILY;COUNT=2000\r\n", overrides), "components"
    )
    exdates = ",".join(f"{(START + timedelta(days=n)):%Y%m%dT%H%M%SZ}" for n in range(1001))
    cases["1001 EXDATE values"] = (
        vevent(f"DTSTART:20261201T090000Z\r\nRRULE:FREQ=DAILY\r\nEXDATE:{exdates}\r\n"), "EXDATE"
    )
    attendees = "".join(f"ATTENDEE:mailto:a{n}@example.com\r\n" for n in range(1001))
    cases["1001 attendees"] = (vevent(f"DTSTART:20261201T090000Z\r\n{attendees}"), "attendees")
    # Each of these cost seconds to parse at its size (400,000 property lines 20 s, 1,000,000 folded lines 35 s).
    for lines in (20_001, 400_000):
        cases[f"{lines} property lines"] = (
            vevent("DTSTART:20261201T090000Z\r\n" + "X-A:b\r\n" * lines), "limits.max_lines"
        )
        cases[f"{lines} folded lines"] = (
            vevent("DTSTART:20261201T090000Z\r\nDESCRIPTION:x" + "\r\n y" * lines + "\r\n"), "limits.max_lines"
        )
    # A 4 MB SUMMARY on one line took 4 s to store (parsing and serializing cost per byte).
    cases["4 MB SUMMARY on one line"] = (
        vevent("DTSTART:20261201T090000Z\r\nSUMMARY:" + "a" * 4_000_000 + "\r\n"), "limits.max_property_bytes"
    )
    cases["300 KB DESCRIPTION folded"] = (
        vevent("DTSTART:20261201T090000Z\r\nDESCRIPTION:x" + "\r\n " + "\r\n ".join(["y" * 74] * 4000) + "\r\n"),
        "limits.max_property_bytes",
    )
    for depth in (9, 3_900):  # 3,900 overflowed the parser's stack
        alarms = "BEGIN:VALARM\r\n" * depth + "END:VALARM\r\n" * depth
        cases[f"components nested {depth} deep"] = (vevent(f"DTSTART:20261201T090000Z\r\n{alarms}"), "deep")
    return cases


CASES = {**runaway_cases(), **malformed_cases()}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_hostile_object_is_refused_and_nothing_stored(hostile, case):
    body, message = CASES[case]
    before = stored(hostile)
    status, text = send(hostile, "PUT", "/alice/sales/hostile.ics", body, headers=CT)
    assert status == 400, text
    assert any(alternative in text for alternative in message.split("|")), text
    assert stored(hostile) == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "application/xml", "text/html"])
def test_calendar_object_needs_text_calendar(hostile, content_type):
    before = stored(hostile)
    status, text = send(hostile, "PUT", "/alice/sales/typed.ics", event("t", START).encode(),
                        headers={"Content-Type": content_type})
    assert status == 400, text
    assert "text/calendar" in text and "5.3.2.1" in text
    assert stored(hostile) == before


def test_large_ordinary_objects_are_accepted(hostile):
    """At the ceilings, not past them: 1,000 attendees, a long folded description, an alarm in an event."""
    attendees = "".join(f"ATTENDEE;CN=Person {n};PARTSTAT=ACCEPTED:mailto:p{n}@example.com\r\n" for n in range(1000))
    description = "DESCRIPTION:" + "x" * 74 + "\r\n " * 5000 + "end\r\n"
    alarm = "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:soon\r\nTRIGGER:-PT5M\r\nEND:VALARM\r\n"
    body = vevent(f"DTSTART:20261201T090000Z\r\nDTEND:20261201T100000Z\r\n{attendees}{description}{alarm}")
    status, text = send(hostile, "PUT", "/alice/sales/large.ics", body.replace(b"UID:h", b"UID:large"), headers=CT)
    assert status == 201, text


@pytest.mark.parametrize("rule", [
    "FREQ=HOURLY", "FREQ=DAILY", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", "FREQ=HOURLY;COUNT=20000",
    "FREQ=DAILY;BYHOUR=9,10,11,12,13,14,15,16;BYMINUTE=0,30",
])
def test_reasonable_rules_are_accepted(hostile, rule):
    body = vevent(f"DTSTART:20261201T090000Z\r\nDTEND:20261201T091500Z\r\nRRULE:{rule}\r\n").replace(
        b"UID:h", f"UID:ok-{abs(hash(rule))}".encode()
    )
    status, text = send(hostile, "PUT", f"/alice/sales/ok-{abs(hash(rule))}.ics", body, headers=CT)
    assert status == 201, text
