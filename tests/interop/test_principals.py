"""RFC 3744 principal search over real HTTP: python-caldav's search_principals, and raw REPORTs."""

from __future__ import annotations

from collections.abc import Callable
from xml.etree import ElementTree as ET

import defusedxml.ElementTree as DefusedET
import pytest
import requests

from proxy.auth import Principal
from proxy.availability.routes import USER_ADDRESSES
from proxy.interop.principals import (
    DISPLAYNAME,
    EMAIL_SET,
    PrincipalRecord,
    PropertySearch,
    SearchQuery,
    parse_query,
    visible_names,
)
from tests.conftest import Calrelay

D = "{DAV:}"
USERS = {
    "alice": ("alice-secret", False),
    "bob": ("bob-secret", False),
    "dana@example.com": ("dana-secret", False),
    "crm": ("crm-secret", True),
}


@pytest.fixture
def server(calrelay_factory: Callable[..., Calrelay]) -> Calrelay:
    def customize(app):
        app[USER_ADDRESSES] = lambda user: ["mailto:bob.smith@icloud.test"] if user == "bob" else []
    server = calrelay_factory(users=USERS, customize=customize)
    # Bob's principal has a display name of its own.
    body = ('<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:displayname>Bob Smith</D:displayname>'
            "</D:prop></D:set></D:propertyupdate>")
    assert requests.request("PROPPATCH", server.url + "bob/", data=body, auth=server.auth("bob"),
                            timeout=10).status_code == 207
    return server


def search(server: Calrelay, user: str, *searches: tuple[str, str], anyof: bool = False) -> requests.Response:
    parts = "".join(f"<D:property-search><D:prop>{prop}</D:prop><D:match>{match}</D:match></D:property-search>"
                    for prop, match in searches)
    test = ' test="anyof"' if anyof else ""
    body = (f'<?xml version="1.0"?><D:principal-property-search xmlns:D="DAV:" '
            f'xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CS="http://calendarserver.org/ns/"{test}>'
            f"{parts}<D:prop><D:displayname/><C:calendar-home-set/><CS:email-address-set/><D:getetag/>"
            "</D:prop></D:principal-property-search>")
    return requests.request("REPORT", server.url, data=body, auth=server.auth(user),
                            headers={"Depth": "0", "Content-Type": "application/xml"}, timeout=10)


def found(response: requests.Response) -> list[str]:
    assert response.status_code == 207, response.text
    return [e.findtext(D + "href") for e in DefusedET.fromstring(response.content).findall(D + "response")]


def test_python_caldav_finds_a_person_by_own_name_and_only_themself(server):
    client = server.client("alice")
    [me] = client.search_principals(name="alice")
    assert str(me.url.path) == "/alice/"
    assert [str(p.url.path) for p in client.search_principals()] == ["/alice/"]
    assert client.search_principals(name="bob") == []


def test_python_caldav_lists_every_user_for_a_service_account(server):
    client = server.client("crm")
    assert sorted(str(p.url.path) for p in client.search_principals()) == [
        "/alice/", "/bob/", "/crm/", "/dana@example.com/",
    ]
    [bob] = client.search_principals(name="smith")  # the stored display name, caselessly
    assert str(bob.url.path) == "/bob/"


def test_search_by_email_finds_the_user_name_address_and_the_icloud_apple_id(server):
    address = "<C:calendar-user-address-set/>"
    assert found(search(server, "crm", (address, "DANA@EXAMPLE"))) == ["/dana@example.com/"]
    assert found(search(server, "crm", ("<CS:email-address-set/>", "icloud.test"))) == ["/bob/"]
    assert found(search(server, "bob", (address, "mailto:bob.smith"))) == ["/bob/"]
    assert found(search(server, "alice", (address, "bob.smith"))) == []  # a person never finds another


def test_property_searches_are_all_of_unless_any_of(server):
    name, address = "<D:displayname/>", "<C:calendar-user-address-set/>"
    assert found(search(server, "crm", (name, "bob"), (address, "example.com"))) == []
    assert found(search(server, "crm", (name, "bob"), (address, "example.com"), anyof=True)) == [
        "/bob/", "/dana@example.com/",
    ]


def test_the_answer_carries_the_requested_properties_and_404s_the_rest(server):
    response = search(server, "crm", ("<D:displayname/>", "Bob"))
    assert response.headers["Content-Type"].startswith("text/xml")
    assert (b"<response><href>/bob/</href><propstat><prop><displayname>Bob Smith</displayname>"
            b"<C:calendar-home-set><href>/bob/</href></C:calendar-home-set>"
            b"<CS:email-address-set><href>bob.smith@icloud.test</href></CS:email-address-set></prop>"
            b"<status>HTTP/1.1 200 OK</status></propstat><propstat><prop><getetag /></prop>"
            b"<status>HTTP/1.1 404 Not Found</status></propstat></response>") in response.content


def test_principal_search_property_set_names_the_searchable_properties(server):
    response = requests.request("REPORT", server.url + "alice/", auth=server.auth("alice"), timeout=10,
                                data='<D:principal-search-property-set xmlns:D="DAV:"/>', headers={"Depth": "0"})
    assert response.status_code == 200
    root = DefusedET.fromstring(response.content)
    assert root.tag == D + "principal-search-property-set"
    searchable = [p.find(D + "prop")[0].tag for p in root.findall(D + "principal-search-property")]
    assert searchable == [DISPLAYNAME, "{urn:ietf:params:xml:ns:caldav}calendar-user-address-set", EMAIL_SET]


def test_a_property_search_without_a_match_is_a_400(server):
    body = ('<D:principal-property-search xmlns:D="DAV:"><D:property-search><D:prop><D:displayname/></D:prop>'
            "</D:property-search><D:prop><D:displayname/></D:prop></D:principal-property-search>")
    response = requests.request("REPORT", server.url, data=body, auth=server.auth("crm"), timeout=10)
    assert response.status_code == 400 and "DAV:match" in response.text


def test_unauthenticated_principal_search_is_challenged(server):
    response = requests.request("REPORT", server.url, data='<D:principal-search-property-set xmlns:D="DAV:"/>',
                                timeout=10)
    assert response.status_code == 401


# -- pure parts ----------------------------------------------------------------------------------------------

def test_python_caldavs_loose_prop_siblings_are_the_wanted_properties():
    root = ET.fromstring('<D:principal-property-search xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
                         "<D:prop/><C:calendar-home-set/><D:displayname/></D:principal-property-search>")
    query = parse_query(root)
    assert query.props == ("{urn:ietf:params:xml:ns:caldav}calendar-home-set", DISPLAYNAME)
    assert query.searches == () and query.matches(PrincipalRecord("x", "x", ()))


def test_visibility_is_self_for_a_person_and_everyone_for_a_service_account():
    assert visible_names(Principal("alice"), ["bob", "alice"]) == ["alice"]
    assert visible_names(Principal("crm", is_service=True), ["bob", "alice"]) == ["alice", "bob"]


def test_matching_is_a_caseless_substring_on_searchable_properties_only():
    record = PrincipalRecord("dana@example.com", "Dana Ö", ("dana@example.com",))
    assert PropertySearch((DISPLAYNAME,), "dana ö").matches(record)
    assert PropertySearch((EMAIL_SET,), "EXAMPLE").matches(record)
    assert not PropertySearch((D + "getetag",), "").matches(record)
    assert not SearchQuery((PropertySearch((DISPLAYNAME,), "x"),), False, ()).matches(record)


def test_the_registry_names_every_report_calrelay_answers():
    from proxy.interop.middleware import HANDLED_REPORTS
    from proxy.interop.reports import CALRELAY_REPORTS, calrelay_answers
    assert all(calrelay_answers(tag) for tag in HANDLED_REPORTS)
    assert calrelay_answers(D + "principal-property-search") and calrelay_answers(D + "sync-collection")
    assert calrelay_answers("{urn:ietf:params:xml:ns:caldav}free-busy-query")
    assert not calrelay_answers(D + "expand-property")
    assert all(description for description in CALRELAY_REPORTS.values())
