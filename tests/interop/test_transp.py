"""RFC 6638 §9.1 schedule-calendar-transp: PROPPATCH, MKCALENDAR, PROPFIND bytes, and availability."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import ClassVar

import pytest
import requests
from caldav.elements.base import BaseElement
from caldav.lib.namespace import ns

from proxy.interop.transp import rewrite_request, value_of
from tests.conftest import Calrelay
from tests.helpers import event, mkcalendar, put

PROPFIND = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            b"<D:prop><C:schedule-calendar-transp/></D:prop></D:propfind>")
DAY = {"start": "2026-03-02T00:00:00Z", "end": "2026-03-03T00:00:00Z"}


def proppatch(server: Calrelay, path: str, value: str, user: str = "alice") -> requests.Response:
    body = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            f"<D:set><D:prop><C:schedule-calendar-transp>{value}</C:schedule-calendar-transp></D:prop></D:set>"
            "</D:propertyupdate>")
    return requests.request("PROPPATCH", server.url + path, data=body.encode(), auth=server.auth(user), timeout=10)


def propfind(server: Calrelay, path: str, depth: str = "0") -> requests.Response:
    return requests.request("PROPFIND", server.url + path, data=PROPFIND, auth=server.auth("alice"),
                            headers={"Depth": depth, "Accept-Encoding": "gzip"}, timeout=10)


def busy(server: Calrelay) -> list[dict]:
    response = requests.get(f"{server.url}api/v1/users/alice/availability", params=DAY, auth=server.auth("alice"),
                            timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["busy"]


@pytest.fixture
def server(calrelay: Calrelay) -> Calrelay:
    assert mkcalendar(calrelay.url + "alice/personal/", calrelay.auth("alice"), "Personal").status_code == 201
    text = event("gym", datetime(2026, 3, 2, 9, tzinfo=UTC), 60, kind="BLOCKED")
    assert put(calrelay.url + "alice/personal/gym.ics", calrelay.auth("alice"), text).status_code == 201
    return calrelay


def test_proppatch_stores_transparent_and_propfind_answers_the_element(server):
    assert proppatch(server, "alice/personal/", "<C:transparent/>").status_code == 207
    response = propfind(server, "alice/personal/")
    assert response.status_code == 207
    assert (b"<prop><C:schedule-calendar-transp><C:transparent /></C:schedule-calendar-transp></prop>"
            b"<status>HTTP/1.1 200 OK</status>") in response.content
    assert proppatch(server, "alice/personal/", "<C:opaque/>").status_code == 207
    assert b"<C:schedule-calendar-transp><C:opaque /></C:schedule-calendar-transp>" in propfind(
        server, "alice/", depth="1").content


def test_mkcalendar_sets_it_in_one_request(server):
    body = (b'<?xml version="1.0"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set>'
            b"<D:prop><D:displayname>Holidays</D:displayname><C:schedule-calendar-transp><C:transparent/>"
            b"</C:schedule-calendar-transp></D:prop></D:set></C:mkcalendar>")
    response = requests.request("MKCALENDAR", server.url + "alice/holidays/", data=body, auth=server.auth("alice"),
                                timeout=10)
    assert response.status_code == 201
    assert b"<C:transparent />" in propfind(server, "alice/holidays/").content


class ScheduleCalendarTransp(BaseElement):
    tag: ClassVar[str] = ns("C", "schedule-calendar-transp")


class Transparent(BaseElement):
    tag: ClassVar[str] = ns("C", "transparent")


def test_extended_mkcol_sets_it_too(server):
    body = (b'<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>'
            b"<D:resourcetype><D:collection/><C:calendar/></D:resourcetype><C:schedule-calendar-transp>"
            b"<C:transparent/></C:schedule-calendar-transp></D:prop></D:set></D:mkcol>")
    response = requests.request("MKCOL", server.url + "alice/shared/", data=body, auth=server.auth("alice"),
                                timeout=10)
    assert response.status_code == 201, response.text
    assert b"<C:transparent />" in propfind(server, "alice/shared/").content


def test_python_caldav_reads_and_writes_it(server):
    calendar = server.client("alice").calendar(url=server.url + "alice/personal/")
    calendar.set_properties([ScheduleCalendarTransp() + Transparent()])
    props = calendar.get_properties([ScheduleCalendarTransp()], parse_props=False)
    element = props[ScheduleCalendarTransp.tag]
    assert [child.tag for child in element] == [Transparent.tag]
    assert busy(server) == []


@pytest.mark.parametrize("value", ["", "<C:busy/>", "maybe", "<C:opaque/><C:transparent/>"])
def test_anything_but_opaque_or_transparent_is_a_400_that_says_what_to_send(server, value):
    response = proppatch(server, "alice/personal/", value)
    assert response.status_code == 400 and "<C:opaque/> or <C:transparent/>" in response.text


def test_a_transparent_calendar_never_blocks_and_an_opaque_one_does(server):
    assert [b["start"] for b in busy(server)] == ["2026-03-02T09:00:00Z"]
    assert proppatch(server, "alice/personal/", "<C:transparent/>").status_code == 207
    assert busy(server) == []
    assert proppatch(server, "alice/personal/", "<C:opaque/>").status_code == 207
    assert [b["start"] for b in busy(server)] == ["2026-03-02T09:00:00Z"]


def test_another_persons_calendar_stays_out_of_reach(server):
    assert proppatch(server, "alice/personal/", "<C:transparent/>", user="bob").status_code == 403


def test_value_of_reads_the_child_or_the_stored_text():
    c = "urn:ietf:params:xml:ns:caldav"
    assert value_of(ET.fromstring(f'<C:x xmlns:C="{c}"><C:transparent/></C:x>')) == "transparent"
    assert value_of(ET.fromstring(f'<C:x xmlns:C="{c}">opaque</C:x>')) == "opaque"
    assert value_of(ET.fromstring(f'<C:x xmlns:C="{c}"><C:other/></C:x>')) is None
    assert rewrite_request(b"not xml") == b"not xml"  # Radicale reports malformed XML itself


def test_an_allprop_propfind_carries_the_element_too(server):
    assert proppatch(server, "alice/personal/", "<C:transparent/>").status_code == 207
    body = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
    response = requests.request("PROPFIND", server.url + "alice/personal/", data=body, auth=server.auth("alice"),
                                headers={"Depth": "0"}, timeout=10)
    assert b"<C:schedule-calendar-transp><C:transparent /></C:schedule-calendar-transp>" in response.content


def test_other_propfinds_pass_untouched_and_stay_compressed(server):
    body = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:displayname/></D:prop></D:propfind>'
    response = requests.request("PROPFIND", server.url + "alice/personal/", data=body, auth=server.auth("alice"),
                                headers={"Depth": "0", "Accept-Encoding": "gzip"}, timeout=10)
    assert response.status_code == 207 and response.headers.get("Content-Encoding") == "gzip"
