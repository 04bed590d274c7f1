"""Free-busy of floating times (RFC 4791 §9.9): the request's zone, else the calendar's, else the configured."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from xml.sax.saxutils import escape

import icalendar
import pytest
import requests

from proxy.availability.zones import iana_zone, requested_zone, zone_of_vtimezone
from tests.availability.conftest import NEW_YORK_TZ, PARIS_TZ
from tests.conftest import Calrelay
from tests.helpers import put

FLOATING = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n"
            "DTSTAMP:20260101T000000Z\r\nDTSTART:20260302T100000\r\nDTEND:20260302T110000\r\n"
            "SUMMARY:Local\r\nX-CALRELAY-KIND:BLOCKED\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
BERLIN_MOZILLA = PARIS_TZ.replace("TZID:Europe/Paris", "TZID:/mozilla.org/20050126_1/Europe/Berlin")


def vcalendar_with(timezone: str) -> str:
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\n{timezone}END:VCALENDAR\r\n"


def mkcalendar(server: Calrelay, path: str, timezone: str | None) -> None:
    zone = f"<C:calendar-timezone>{escape(vcalendar_with(timezone))}</C:calendar-timezone>" if timezone else ""
    body = ('<?xml version="1.0"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set>'
            f"<D:prop><D:displayname>{path}</D:displayname>{zone}</D:prop></D:set></C:mkcalendar>")
    response = requests.request("MKCALENDAR", server.url + path, data=body.encode(), auth=server.auth("alice"),
                                timeout=10)
    assert response.status_code == 201, response.text


@pytest.fixture
def server(calrelay_factory: Callable[..., Calrelay]) -> Calrelay:
    server = calrelay_factory(overrides={"availability": {"timezone": "Europe/Paris"}})
    mkcalendar(server, "alice/newyork/", NEW_YORK_TZ)
    mkcalendar(server, "alice/plain/", None)
    for path in ("alice/newyork/", "alice/plain/"):
        assert put(f"{server.url}{path}local.ics", server.auth("alice"), FLOATING.format(uid=path)).status_code == 201
    return server


def report(server: Calrelay, path: str, extra: str = "") -> requests.Response:
    body = ('<?xml version="1.0"?><C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
            f'<C:time-range start="20260302T000000Z" end="20260303T000000Z"/>{extra}</C:free-busy-query>')
    return requests.request("REPORT", server.url + path, data=body.encode(), auth=server.auth("alice"),
                            headers={"Depth": "1"}, timeout=10)


def busy_hours(response: requests.Response) -> list[tuple[int, int]]:
    assert response.status_code == 200, response.text
    periods = []
    for component in icalendar.Calendar.from_ical(response.content).walk("VFREEBUSY"):
        values = component.get("FREEBUSY", [])
        for value in values if isinstance(values, list) else [values]:
            start, end = value.dt
            periods.append((start.astimezone(UTC).hour, end.astimezone(UTC).hour))
    return periods


def test_floating_times_are_local_times_of_the_calendar_timezone(server):
    assert busy_hours(report(server, "alice/newyork/")) == [(15, 16)]  # 10:00 EST


def test_python_caldav_free_busy_request_uses_the_calendar_timezone(server):
    calendar = server.client("alice").calendar(url=server.url + "alice/newyork/")
    freebusy = calendar.freebusy_request(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    assert "FREEBUSY;FBTYPE=BUSY;VALUE=PERIOD:20260302T150000Z/20260302T160000Z" in freebusy.data


def test_without_a_calendar_timezone_the_configured_zone_applies(server):
    assert busy_hours(report(server, "alice/plain/")) == [(9, 10)]  # 10:00 CET


def test_the_requests_timezone_id_comes_first(server):
    assert busy_hours(report(server, "alice/newyork/", "<C:timezone-id>Asia/Tokyo</C:timezone-id>")) == [(1, 2)]


def test_the_requests_vtimezone_comes_first(server):
    zone = f"<C:timezone>{escape(vcalendar_with(BERLIN_MOZILLA))}</C:timezone>"
    assert busy_hours(report(server, "alice/newyork/", zone)) == [(9, 10)]


@pytest.mark.parametrize("extra", [
    "<C:timezone-id>Mars/Olympus_Mons</C:timezone-id>",
    "<C:timezone>not a calendar</C:timezone>",
    f"<C:timezone>{escape(vcalendar_with(''))}</C:timezone>",
])
def test_an_unusable_request_timezone_is_a_400_that_says_why(server, extra):
    response = report(server, "alice/newyork/", extra)
    assert response.status_code == 400 and response.text.startswith("free-busy-query: ")


def test_iana_names_are_found_inside_vendor_tzids():
    assert iana_zone("/mozilla.org/20050126_1/Europe/Berlin").key == "Europe/Berlin"
    assert iana_zone("/softwarestudio.org/Olson_20011030_5/America/Argentina/Buenos_Aires").key == (
        "America/Argentina/Buenos_Aires"
    )
    assert iana_zone("../../etc/passwd") is None
    assert iana_zone("Custom Zone") is None
    assert zone_of_vtimezone(vcalendar_with(NEW_YORK_TZ)).key == "America/New_York"


def test_requested_zone_is_none_without_either_element():
    root = ET.fromstring('<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav"/>')
    assert requested_zone(root) is None
