"""Tenant isolation: alice reaches nothing of bob's, by any method, destination, multiget href or JSON API."""

from __future__ import annotations

import pytest

from tests.helpers import event
from tests.hostile.conftest import START, send, stored

XML = {"Content-Type": "application/xml; charset=utf-8", "Depth": "1"}
PROPFIND = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:displayname/></D:prop></D:propfind>'
PROPPATCH = (
    b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:displayname>pwned</D:displayname>'
    b"</D:prop></D:set></D:propertyupdate>"
)
QUERY = (
    b'<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    b'<D:prop><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"/></C:filter></C:calendar-query>'
)
FREEBUSY = (
    b'<?xml version="1.0"?><C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
    b'<C:time-range start="20261201T000000Z" end="20261208T000000Z"/></C:free-busy-query>'
)
SYNC = (
    b'<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:"><D:sync-token/><D:sync-level>1</D:sync-level>'
    b"<D:prop><D:getetag/></D:prop></D:sync-collection>"
)
MKCAL = b'<?xml version="1.0"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"/>'

METHODS = {
    "GET object": ("GET", "/bob/sales/a.ics", b"", {}),
    "GET calendar": ("GET", "/bob/sales/", b"", {}),
    "HEAD": ("HEAD", "/bob/sales/a.ics", b"", {}),
    "PUT": ("PUT", "/bob/sales/new.ics", event("x", START).encode(), {"Content-Type": "text/calendar"}),
    "PUT over": ("PUT", "/bob/sales/a.ics", event("bob-a", START).encode(), {"Content-Type": "text/calendar"}),
    "DELETE object": ("DELETE", "/bob/sales/a.ics", b"", {}),
    "DELETE calendar": ("DELETE", "/bob/sales/", b"", {}),
    "PROPFIND": ("PROPFIND", "/bob/", PROPFIND, XML),
    "PROPPATCH": ("PROPPATCH", "/bob/sales/", PROPPATCH, XML),
    "REPORT": ("REPORT", "/bob/sales/", QUERY, XML),
    "free-busy REPORT": ("REPORT", "/bob/sales/", FREEBUSY, XML),
    "sync-collection REPORT": ("REPORT", "/bob/sales/", SYNC, XML),
    "MKCALENDAR": ("MKCALENDAR", "/bob/evil/", MKCAL, XML),
    "MKCOL": ("MKCOL", "/bob/evil2/", b"", {}),
    "MOVE from bob": ("MOVE", "/bob/sales/a.ics", b"", {"Destination": "/alice/sales/stolen.ics"}),
    "COPY from bob": ("COPY", "/bob/sales/a.ics", b"", {"Destination": "/alice/sales/stolen.ics"}),
    "MOVE into bob": ("MOVE", "/alice/sales/a.ics", b"", {"Destination": "/bob/sales/planted.ics"}),
    "COPY into bob": ("COPY", "/alice/sales/a.ics", b"", {"Destination": "/bob/sales/planted.ics"}),
    "MOVE into bob (absolute URL)": (
        "MOVE", "/alice/sales/a.ics", b"", {"Destination": "http://127.0.0.1/bob/sales/planted.ics"},
    ),
}
#: A Destination on another host:port is another server: RFC 4918 section 9.9.4 prescribes 502 for that.
OTHER_SERVER = {"MOVE into bob (absolute URL)"}


@pytest.mark.parametrize("case", list(METHODS), ids=list(METHODS))
def test_alice_cannot_touch_bobs_home(hostile, case):
    method, path, body, headers = METHODS[case]
    before = stored(hostile)
    status, text = send(hostile, method, path, body, headers=headers)
    allowed = {403, 404, 405, 501} | ({502} if case in OTHER_SERVER else set())
    assert status in allowed, (status, text)  # refused, never a 2xx
    assert "bob-a" not in text
    assert stored(hostile) == before


def test_multiget_hrefs_into_bobs_home_return_nothing_of_his(hostile):
    body = (
        b'<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        b"<D:prop><D:getetag/><C:calendar-data/></D:prop><D:href>/alice/sales/a.ics</D:href>"
        b"<D:href>/bob/sales/a.ics</D:href><D:href>/alice/../bob/sales/a.ics</D:href>"
        b"<D:href>http://127.0.0.1/bob/sales/a.ics</D:href></C:calendar-multiget>"
    )
    status, text = send(hostile, "REPORT", "/alice/sales/", body, headers=XML)
    assert status < 500, text
    assert "UID:bob-a" not in text


@pytest.mark.parametrize("path", [
    "/api/v1/users/bob/availability?start=2026-12-01T00:00:00Z&end=2026-12-02T00:00:00Z",
    "/api/v1/users/bob/busy-reasons?at=2026-12-01T09:10:00Z",
    "/api/v1/users/bob/link", "/api/v1/users/bob/status", "/api/v1/users/bob/activity", "/api/v1/users/bob/feeds",
    "/api/v1/users/bob/policies", "/api/v1/users/bob/settings",
])
def test_json_api_of_another_user_is_forbidden(hostile, path):
    status, text = send(hostile, "GET", path)
    assert status == 403, text
    assert "bob-a" not in text


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/v1/users/bob/sync"), ("POST", "/api/v1/users/bob/icloud-calendars"),
    ("PUT", "/api/v1/users/bob/link"), ("DELETE", "/api/v1/users/bob/link"), ("POST", "/api/v1/users/bob/feeds"),
    ("DELETE", "/api/v1/users/bob/feeds/1"), ("PATCH", "/api/v1/users/bob/policies"),
    ("PUT", "/api/v1/users/bob/settings"),
])
def test_json_api_writes_for_another_user_are_forbidden(hostile, method, path):
    before = stored(hostile)
    status, text = send(hostile, method, path, b"{}", headers={"Content-Type": "application/json"})
    assert status == 403, text
    assert stored(hostile) == before


def test_the_root_lists_no_other_home(hostile):
    status, text = send(hostile, "PROPFIND", "/", PROPFIND, headers=XML)
    assert status == 207, text
    assert "/alice/" in text and "/bob/" not in text
