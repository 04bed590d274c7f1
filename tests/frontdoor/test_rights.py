"""The rights matrix: a person reaches only their own principal; the service account reaches all."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests

from tests.helpers import PROPPATCH_KIND, event, mkcalendar, put

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
REPORT_BODY = (
    '<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    '<D:prop><D:getetag/></D:prop><C:filter><C:comp-filter name="VCALENDAR"/></C:filter></C:calendar-query>'
)


@pytest.fixture
def bobs_calendar(calrelay):
    bob = calrelay.auth("bob")
    assert mkcalendar(calrelay.url + "bob/cal/", bob, "Bob", kind="service").status_code == 201
    assert put(calrelay.url + "bob/cal/e.ics", bob, event("e", START)).status_code == 201
    assert mkcalendar(calrelay.url + "alice/cal/", calrelay.auth("alice"), "Alice", kind="service").status_code == 201
    return calrelay


def attempts(url: str) -> dict[str, tuple[str, str, dict, bytes]]:
    """method -> (method, url, headers, body) aimed at bob's data."""
    return {
        "PROPFIND principal": ("PROPFIND", url + "bob/", {"Depth": "1"}, b""),
        "PROPFIND calendar": ("PROPFIND", url + "bob/cal/", {"Depth": "1"}, b""),
        "GET object": ("GET", url + "bob/cal/e.ics", {}, b""),
        "GET feed": ("GET", url + "bob/cal/", {}, b""),
        "REPORT": ("REPORT", url + "bob/cal/", {"Depth": "1"}, REPORT_BODY.encode()),
        "PUT new": ("PUT", url + "bob/cal/new.ics", {"Content-Type": "text/calendar"}, event("n", START).encode()),
        "PUT replace": ("PUT", url + "bob/cal/e.ics", {"Content-Type": "text/calendar"}, event("e", START).encode()),
        "DELETE object": ("DELETE", url + "bob/cal/e.ics", {}, b""),
        "PROPPATCH": ("PROPPATCH", url + "bob/cal/", {}, PROPPATCH_KIND.format(kind="simple").encode()),
        "MKCALENDAR": ("MKCALENDAR", url + "bob/other/", {}, b""),
        "MOVE out": ("MOVE", url + "bob/cal/e.ics", {"Destination": url + "alice/cal/e.ics"}, b""),
        "MOVE in": ("MOVE", url + "alice/cal/x.ics", {"Destination": url + "bob/cal/x.ics"}, b""),
        "DELETE calendar": ("DELETE", url + "bob/cal/", {}, b""),
    }


NAMES = list(attempts("/"))


@pytest.mark.parametrize("name", NAMES)
def test_other_user_is_refused(bobs_calendar, name):
    server = bobs_calendar
    if name == "MOVE in":
        put(server.url + "alice/cal/x.ics", server.auth("alice"), event("x", START))
    method, url, headers, body = attempts(server.url)[name]
    response = requests.request(method, url, headers=headers, data=body, auth=server.auth("alice"), timeout=10)
    assert response.status_code in (403, 404), (name, response.status_code, response.text)
    # bob's data is untouched
    check = requests.get(server.url + "bob/cal/e.ics", auth=server.auth("bob"), timeout=10)
    assert check.status_code == 200 and "UID:e" in check.text


@pytest.mark.parametrize("name", NAMES)
def test_service_account_is_allowed(bobs_calendar, name):
    server = bobs_calendar
    if name == "MOVE in":
        put(server.url + "alice/cal/x.ics", server.auth("alice"), event("x", START))
    method, url, headers, body = attempts(server.url)[name]
    response = requests.request(method, url, headers=headers, data=body, auth=server.auth("crm"), timeout=10)
    assert 200 <= response.status_code < 300, (name, response.status_code, response.text)


def test_root_listing_shows_only_own_principal(bobs_calendar):
    server = bobs_calendar
    response = requests.request(
        "PROPFIND", server.url, headers={"Depth": "1"}, auth=server.auth("alice"), timeout=10
    )
    assert response.status_code == 207
    assert "/alice/" in response.text and "/bob/" not in response.text
