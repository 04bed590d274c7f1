"""Normalisation and comparison (pure): what counts as the same answer, and what is reported."""

from __future__ import annotations

from proxy.replay.compare import Bindings, DiffKind, compare
from proxy.replay.har import Message
from proxy.replay.normalize import MASKED, BodyKind, VarKind, body_facts, ical_facts, strip_origin, xml_facts

XML = (("Content-Type", "application/xml; charset=utf-8"),)
ICS = (("Content-Type", "text/calendar; charset=utf-8"),)


def multistatus(*responses: str, host: str = "http://127.0.0.1:5232") -> bytes:
    body = "".join(responses).replace("{host}", host)
    return (
        '<?xml version="1.0"?><D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" '
        f'xmlns:CS="http://calendarserver.org/ns/">{body}</D:multistatus>'
    ).encode()


def prop_response(href: str, props: str, status: str = "HTTP/1.1 200 OK") -> str:
    return (
        f"<D:response><D:href>{href}</D:href><D:propstat><D:prop>{props}</D:prop>"
        f"<D:status>{status}</D:status></D:propstat></D:response>"
    )


EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:appt-1\r\n"
    "DTSTAMP:{stamp}\r\nDTSTART:20300101T100000Z\r\nDTEND:20300101T110000Z\r\nSUMMARY:{summary}\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)


def event(summary: str = "Intro call", stamp: str = "20240101T000000Z") -> str:
    return EVENT.format(summary=summary, stamp=stamp)


def test_strip_origin_removes_scheme_host_port_and_decodes() -> None:
    assert strip_origin("http://127.0.0.1:5232/alice/a%40b.ics") == "/alice/a@b.ics"
    assert strip_origin("/alice/") == "/alice/"
    assert strip_origin("https://example.com") == "/"


def test_xml_facts_address_responses_by_href_and_mark_variables() -> None:
    facts = xml_facts(
        multistatus(prop_response("{host}/alice/cal/", '<D:getetag>"e1"</D:getetag><CS:getctag>c1</CS:getctag>'))
    )
    by_path = {fact.path: fact for fact in facts}
    prefix = "D:multistatus/D:response[/alice/cal/]/D:propstat[200]/D:prop"
    assert by_path[f"{prefix}/D:getetag"].var is VarKind.ETAG
    assert by_path[f"{prefix}/CS:getctag"].var is VarKind.CTAG
    assert by_path["D:multistatus/D:response[/alice/cal/]/D:href"].value == "/alice/cal/"


def test_xml_refuses_entities() -> None:
    hostile = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'
    kind, facts = body_facts("application/xml", hostile)
    assert kind is BodyKind.TEXT  # compared as text, never expanded
    assert any("&a;" in fact.value for fact in facts)


def test_ical_facts_mask_stamps_and_ignore_folding_and_parameter_order() -> None:
    one = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTAMP:20240101T000000Z\r\n"
    one += "ATTENDEE;ROLE=CHAIR;CN=Bob:mailto:b@example.com\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    two = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTAMP:20250505T101010Z\r\n"
    two += "ATTENDEE;CN=Bob;ROLE=CHAIR:mai\r\n lto:b@example.com\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    assert sorted(ical_facts(one), key=str) == sorted(ical_facts(two), key=str)
    assert any(fact.value == MASKED and fact.path.endswith("/DTSTAMP") for fact in ical_facts(one))


def test_same_conversation_from_another_host_with_other_tokens_matches() -> None:
    recorded = multistatus(
        prop_response("{host}/alice/cal/a.ics", '<D:getetag>"e1"</D:getetag>'),
        prop_response("{host}/alice/cal/", "<D:sync-token>http://x/sync/1</D:sync-token>"),
    )
    # Other host, other order, other ETag and token, another reason phrase.
    actual = multistatus(
        prop_response("/alice/cal/", "<D:sync-token>http://y/sync/99</D:sync-token>", "HTTP/1.1 200 Fine"),
        prop_response("{host}/alice/cal/a.ics", '<D:getetag>"zz"</D:getetag>'),
        host="https://other.example:8443",
    )
    bindings = Bindings()
    assert compare(207, Message(XML, recorded), 207, Message(XML, actual), bindings) == []
    assert bindings.values == {'"e1"': '"zz"', "http://x/sync/1": "http://y/sync/99"}
    assert bindings.substitute("<D:sync-token>http://x/sync/1</D:sync-token>") == (
        "<D:sync-token>http://y/sync/99</D:sync-token>"
    )


def test_changed_event_body_in_report_is_named() -> None:
    def report(summary: str, stamp: str) -> bytes:
        data = f"<C:calendar-data>{event(summary, stamp)}</C:calendar-data>"
        return multistatus(prop_response("/alice/cal/appt-1.ics", data))

    bindings = Bindings()
    same = compare(
        207,
        Message(XML, report("Intro", "20240101T000000Z")),
        207,
        Message(XML, report("Intro", "20990101T000000Z")),
        bindings,
    )
    assert same == []
    differences = compare(
        207,
        Message(XML, report("Intro", "20240101T000000Z")),
        207,
        Message(XML, report("Changed", "20240202T000000Z")),
        bindings,
    )
    assert len(differences) == 1
    difference = differences[0]
    assert difference.kind is DiffKind.BODY
    assert difference.where.endswith("VEVENT[uid=appt-1]/SUMMARY")
    assert (difference.expected, difference.actual) == ("Intro", "Changed")
    assert "SUMMARY" in difference.describe() and "'Changed'" in difference.describe()


def test_status_difference_and_missing_etag_are_reported() -> None:
    recorded = Message((("ETag", '"a"'),), b"")
    actual = Message((), b"")
    differences = compare(201, recorded, 204, actual, Bindings())
    assert {(d.kind, d.where) for d in differences} == {(DiffKind.STATUS, ""), (DiffKind.HEADER, "ETag")}


def test_calendar_body_compared_as_components() -> None:
    recorded = Message(ICS, event("A").encode())
    assert compare(200, recorded, 200, Message(ICS, event("A", "20300101T000000Z").encode()), Bindings()) == []
    moved = event("A").replace("DTSTART:20300101T100000Z", "DTSTART:20300101T120000Z")
    [difference] = compare(200, recorded, 200, Message(ICS, moved.encode()), Bindings())
    assert difference.where.endswith("/DTSTART") and difference.actual == "20300101T120000Z"


def test_missing_and_unexpected_responses() -> None:
    recorded = multistatus(prop_response("/alice/cal/a.ics", "<D:getetag>1</D:getetag>"))
    actual = multistatus(prop_response("/alice/cal/b.ics", "<D:getetag>1</D:getetag>"))
    differences = compare(207, Message(XML, recorded), 207, Message(XML, actual), Bindings())
    missing = [d for d in differences if d.actual is None]
    unexpected = [d for d in differences if d.expected is None]
    assert missing and all("/alice/cal/a.ics" in d.where for d in missing)
    assert unexpected and all("/alice/cal/b.ics" in d.where for d in unexpected)


def test_error_prose_is_not_compared_but_dav_error_xml_is() -> None:
    text = (("Content-Type", "text/plain"),)
    assert compare(403, Message(text, b"Forbidden."), 403, Message(text, b"Access denied\n"), Bindings()) == []
    recorded = b'<D:error xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><C:valid-calendar-data/></D:error>'
    actual = recorded.replace(b"valid-calendar-data", b"supported-calendar-data")
    assert compare(403, Message(XML, recorded), 403, Message(XML, actual), Bindings())


def test_location_binds_server_chosen_names() -> None:
    bindings = Bindings()
    recorded = Message((("Location", "http://a:1/alice/cal/abc.ics"),), b"")
    actual = Message((("Location", "http://b:2/alice/cal/xyz.ics"),), b"")
    assert compare(201, recorded, 201, actual, bindings) == []
    assert bindings.substitute("/alice/cal/abc.ics") == "/alice/cal/xyz.ics"
    listing = multistatus(prop_response("/alice/cal/abc.ics", "<D:displayname>n</D:displayname>"))
    received = multistatus(prop_response("/alice/cal/xyz.ics", "<D:displayname>n</D:displayname>"))
    assert compare(207, Message(XML, listing), 207, Message(XML, received), bindings) == []


def test_json_compared_structurally() -> None:
    json_type = (("Content-Type", "application/json"),)
    recorded = Message(json_type, b'{"a": 1, "b": [1, 2]}')
    assert compare(200, recorded, 200, Message(json_type, b'{"b": [1, 2], "a": 1}'), Bindings()) == []
    [difference] = compare(200, recorded, 200, Message(json_type, b'{"b": [1, 3], "a": 1}'), Bindings())
    assert difference.where == "$.b[1]"
