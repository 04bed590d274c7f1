"""calendar-query with a prop-filter directly under the VCALENDAR comp-filter (no component type)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import defusedxml.ElementTree as DefusedET
import pytest
import requests

from proxy.interop.textsearch import (
    COMPONENT_TYPES,
    component_prop_filters,
    per_component_queries,
    supported_components,
)
from proxy.keys import ENGINE
from tests.conftest import Calrelay
from tests.helpers import mkcalendar, put

D, C = "{DAV:}", "{urn:ietf:params:xml:ns:caldav}"
MKCALENDAR_MIXED = b"""<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>
<C:supported-calendar-component-set><C:comp name="VEVENT"/><C:comp name="VTODO"/></C:supported-calendar-component-set>
</D:prop></D:set></C:mkcalendar>"""


def vobject(component: str, uid: str, *lines: str) -> str:
    body = "\r\n".join(lines)
    when = "DTSTART:20260302T090000Z\r\nDTEND:20260302T100000Z" if component == "VEVENT" else "DUE:20260302T090000Z"
    return (f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//{uid}//EN\r\nBEGIN:{component}\r\nUID:{uid}\r\n"
            f"DTSTAMP:20260101T000000Z\r\n{when}\r\n{body}\r\nEND:{component}\r\nEND:VCALENDAR\r\n")


@pytest.fixture
def server(calrelay: Calrelay) -> Calrelay:
    auth = calrelay.auth("alice")
    assert requests.request("MKCALENDAR", calrelay.url + "alice/mixed/", data=MKCALENDAR_MIXED, auth=auth,
                            timeout=10).status_code == 201
    objects = {
        "meeting.ics": vobject("VEVENT", "meeting", "SUMMARY:Quarterly review", "CATEGORIES:WORK,FINANCE"),
        "lunch.ics": vobject("VEVENT", "lunch", "SUMMARY:Lunch", "CATEGORIES:PERSONAL"),
        "report.ics": vobject("VTODO", "report", "SUMMARY:Write the review", "CATEGORIES:WORK"),
    }
    for href, text in objects.items():
        assert put(f"{calrelay.url}alice/mixed/{href}", auth, text).status_code == 201
    return calrelay


def query(server: Calrelay, filter_xml: str) -> requests.Response:
    body = ('<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            f'<D:prop><D:getetag/></D:prop><C:filter><C:comp-filter name="VCALENDAR">{filter_xml}'
            "</C:comp-filter></C:filter></C:calendar-query>")
    return requests.request("REPORT", server.url + "alice/mixed/", data=body, auth=server.auth("alice"),
                            headers={"Depth": "1", "Content-Type": "application/xml"}, timeout=10)


def hrefs(response: requests.Response) -> list[str]:
    assert response.status_code == 207, response.text
    return sorted(e.findtext(D + "href") for e in DefusedET.fromstring(response.content).findall(D + "response"))


def text_match(prop: str, text: str) -> str:
    match = f'<C:text-match collation="i;ascii-casemap">{text}</C:text-match>'
    return f'<C:prop-filter name="{prop}">{match}</C:prop-filter>'


def test_a_category_without_component_type_matches_events_and_todos_once_each(server):
    assert hrefs(query(server, text_match("CATEGORIES", "WORK"))) == [
        "/alice/mixed/meeting.ics", "/alice/mixed/report.ics",
    ]


def test_prop_filters_are_anded_within_one_component(server):
    both = text_match("CATEGORIES", "WORK") + text_match("SUMMARY", "review")
    assert hrefs(query(server, both)) == ["/alice/mixed/meeting.ics", "/alice/mixed/report.ics"]
    assert hrefs(query(server, text_match("CATEGORIES", "WORK") + text_match("SUMMARY", "lunch"))) == []


def test_other_filters_keep_their_meaning(server):
    only_events = text_match("SUMMARY", "review") + '<C:comp-filter name="VEVENT"/>'
    assert hrefs(query(server, only_events)) == ["/alice/mixed/meeting.ics"]


def test_vcalendar_properties_still_test_the_vcalendar_itself(server):
    assert hrefs(query(server, text_match("PRODID", "//lunch//"))) == ["/alice/mixed/lunch.ics"]


def test_python_caldav_category_search_without_component_type(server):
    calendar = server.client("alice").calendar(url=server.url + "alice/mixed/")
    found = calendar.search(category="FINANCE", post_filter=False, compatibility_workarounds=False)
    assert [str(o.url.path) for o in found] == ["/alice/mixed/meeting.ics"]


def test_a_stranger_gets_radicales_refusal(server):
    body = ('<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><C:filter>'
            f'<C:comp-filter name="VCALENDAR">{text_match("SUMMARY", "x")}</C:comp-filter></C:filter>'
            "</C:calendar-query>")
    response = requests.request("REPORT", server.url + "alice/mixed/", data=body, auth=server.auth("bob"),
                                headers={"Depth": "1"}, timeout=10)
    assert response.status_code == 403


def test_only_the_component_types_a_calendar_holds_are_queried(server):
    engine = server.app[ENGINE]
    assert mkcalendar(server.url + "alice/events/", server.auth("alice"), "Events").status_code == 201
    assert supported_components(engine, "/alice/mixed/") == ("VEVENT", "VTODO")
    assert supported_components(engine, "/alice/events/") == ("VEVENT",)
    assert supported_components(engine, "/alice/none/") == COMPONENT_TYPES
    assert supported_components(engine, "/") == COMPONENT_TYPES


def test_rewritten_queries_wrap_the_component_prop_filters():
    root = ET.fromstring(
        '<C:calendar-query xmlns:C="urn:ietf:params:xml:ns:caldav"><C:filter><C:comp-filter name="VCALENDAR">'
        '<C:prop-filter name="VERSION"/><C:prop-filter name="SUMMARY"/></C:comp-filter></C:filter>'
        "</C:calendar-query>"
    )
    assert [p.get("name") for p in component_prop_filters(root)] == ["SUMMARY"]
    bodies = [ET.fromstring(body) for body in per_component_queries(root)]
    calendars = [body.find(f"{C}filter/{C}comp-filter") for body in bodies]
    assert [[(c.tag, c.get("name")) for c in calendar] for calendar in calendars] == [
        [(C + "prop-filter", "VERSION"), (C + "comp-filter", name)] for name in ("VEVENT", "VTODO", "VJOURNAL")
    ]
    assert all(calendar[1][0].get("name") == "SUMMARY" for calendar in calendars)
