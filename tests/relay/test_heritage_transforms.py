"""Pure transforms for what iCloud changes by itself (default alarms, stripped VTIMEZONEs)."""

from __future__ import annotations

from proxy.relay import transforms

BASE = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n{tz}BEGIN:VEVENT\r\nUID:u1\r\nDTSTAMP:20260101T000000Z\r\n"
    "DTSTART;TZID=Europe/Berlin:20261204T100000\r\nDTEND;TZID=Europe/Berlin:20261204T110000\r\nSUMMARY:{summary}"
    "\r\n{alarm}END:VEVENT\r\nEND:VCALENDAR\r\n"
)
TZ = (
    "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\n"
    "TZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"
)
DEFAULT = (
    "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Event reminder\r\nTRIGGER:-PT15M\r\n"
    "X-APPLE-DEFAULT-ALARM:TRUE\r\nEND:VALARM\r\n"
)
OWN = "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:mine\r\nTRIGGER:-PT5M\r\nEND:VALARM\r\n"


def text(summary: str = "Call", tz: str = TZ, alarm: str = "") -> str:
    return BASE.format(tz=tz, summary=summary, alarm=alarm)


def test_icloud_own_changes_do_not_change_the_hash() -> None:
    sent = transforms.content_hash(text())
    assert transforms.content_hash(text(tz="", alarm=DEFAULT)) == sent
    assert transforms.content_hash(text(alarm=OWN)) != sent
    assert transforms.content_hash(text(summary="Moved", tz="", alarm=DEFAULT)) != sent


def test_keep_icloud_additions_carries_the_default_alarm_over() -> None:
    kept = transforms.keep_icloud_additions(text(summary="Moved"), text(tz="", alarm=DEFAULT))
    assert "X-APPLE-DEFAULT-ALARM:TRUE" in kept and "SUMMARY:Moved" in kept
    # An event with an alarm of its own is sent as it is, and nothing is invented without one in iCloud.
    assert transforms.keep_icloud_additions(text(alarm=OWN), text(alarm=DEFAULT)) == text(alarm=OWN)
    assert transforms.keep_icloud_additions(text(), text()) == text()
