"""The relay against the emulator's CalendarServer behaviours, all on (their default): iCloud's own changes
(default alarms, stripped VTIMEZONEs, %40 hrefs) are kept and never mistaken for edits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import requests
from icalendar import Calendar

from tests.helpers import event, put
from tests.relay.conftest import wait_until
from tests.relay.test_pull import mirror

START = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
BERLIN = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calrelay tests//EN\r\n"
    "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n"
    "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n"
    "END:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261121T000000Z\r\n"
    "DTSTART;TZID=Europe/Berlin:20261204T100000\r\nDTEND;TZID=Europe/Berlin:20261204T110000\r\n"
    "SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def _alarms(text: str) -> list[str]:
    return [str(alarm.get("X-APPLE-DEFAULT-ALARM", "")) for alarm in Calendar.from_ical(text).walk("VALARM")]


def test_update_keeps_the_default_alarm_icloud_added(linked):
    crm = linked.relay.auth("crm")
    url = linked.url + "alice/sales/alarm.ics"
    assert put(url, crm, event("alarm", START, summary="First")).status_code == 201
    wait_until(lambda: "alarm" in linked.icloud_store(), message="appointment in iCloud")
    assert _alarms(linked.icloud_store()["alarm"]) == ["TRUE"]
    crm_etag = requests.get(url, auth=crm, timeout=10).headers["ETag"]
    linked.passes(2)
    # The alarm iCloud added is not an iCloud edit: the CRM's copy is untouched.
    assert requests.get(url, auth=crm, timeout=10).headers["ETag"] == crm_etag

    assert put(url, crm, event("alarm", START, summary="Second")).status_code == 204
    wait_until(lambda: "SUMMARY:Second" in linked.icloud_store().get("alarm", ""), message="update in iCloud")
    assert _alarms(linked.icloud_store()["alarm"]) == ["TRUE"]
    assert "VALARM" not in requests.get(url, auth=crm, timeout=10).text
    assert linked.status()["pending"] == []


def test_stripped_timezones_are_no_phantom_edit(linked):
    crm = linked.relay.auth("crm")
    url = linked.url + "alice/sales/tz.ics"
    assert put(url, crm, BERLIN.format(uid="tz-appt", summary="Berlin call")).status_code == 201
    wait_until(lambda: "tz-appt" in linked.icloud_store(), message="appointment in iCloud")
    assert "BEGIN:VTIMEZONE" not in linked.icloud_store()["tz-appt"]
    crm_text = requests.get(url, auth=crm, timeout=10)
    linked.passes(3)
    again = requests.get(url, auth=crm, timeout=10)
    assert again.headers["ETag"] == crm_text.headers["ETag"] and again.text == crm_text.text
    assert "tz-appt" not in mirror(linked)


def test_uid_with_at_sign_percent_encoded_href_is_one_event(linked):
    crm = linked.relay.auth("crm")
    url = linked.url + "alice/sales/at.ics"
    assert put(url, crm, event("booking-7@crm.test", START + timedelta(hours=2))).status_code == 201
    wait_until(lambda: "booking-7@crm.test" in linked.icloud_store(), message="appointment in iCloud")
    (state,) = linked.emulator.emulator.store.accounts.values()
    assert [name for name in state.collections["work"].objects if "booking-7" in name] == ["booking-7@crm.test.ics"]
    linked.passes(3)
    # The %40 spelling in iCloud's listing names the same object: no mirror copy, nothing re-created.
    assert "booking-7@crm.test" not in mirror(linked)
    assert len([uid for uid in linked.icloud_store() if uid.startswith("booking-7")]) == 1
    assert linked.status()["pending"] == []
