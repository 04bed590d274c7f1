"""Generated families of hostile XML and protocol abuse: each a 4xx with a message, never a 5xx or a hang."""

from __future__ import annotations

import http.client

import pytest

from tests.hostile.conftest import send, stored

XML = {"Content-Type": "application/xml; charset=utf-8"}
DAV_PROPFIND = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:displayname/></D:prop></D:propfind>'


def nested(depth: int, root: str) -> bytes:
    """A body whose root is ``root`` (a DAV: element) with ``depth`` nested elements inside."""
    return (f'<D:{root} xmlns:D="DAV:">' + "<D:x>" * depth + "</D:x>" * depth + f"</D:{root}>").encode()


DEEP_CASES = {
    f"{method} {depth} deep": (method, path, nested(depth, root))
    for method, path, root in (
        ("PROPFIND", "/alice/", "propfind"),
        ("PROPPATCH", "/alice/sales/", "propertyupdate"),
        ("REPORT", "/alice/sales/", "sync-collection"),
    )
    for depth in (100, 10_000, 100_000)
}


@pytest.mark.parametrize("case", list(DEEP_CASES), ids=list(DEEP_CASES))
def test_deep_xml_is_refused_before_the_engine(hostile, case):
    method, path, body = DEEP_CASES[case]
    before = stored(hostile)
    status, text = send(hostile, method, path, body, headers={**XML, "Depth": "0"})
    assert status == 400, text
    assert "limits.max_xml_depth" in text
    assert stored(hostile) == before


def test_too_many_elements_are_refused(hostile):
    body = b'<D:propfind xmlns:D="DAV:"><D:prop>' + b"<D:displayname/>" * 100_001 + b"</D:prop></D:propfind>"
    status, text = send(hostile, "PROPFIND", "/alice/", body, headers={**XML, "Depth": "0"})
    assert status == 400 and "limits.max_xml_elements" in text


REFUSED = {
    "empty REPORT": ("REPORT", "/alice/sales/", b"", "needs an XML body"),
    "blank REPORT": ("REPORT", "/alice/sales/", b"  \r\n", "needs an XML body"),
    "empty PROPPATCH": ("PROPPATCH", "/alice/sales/", b"", "needs an XML body"),
    "unknown DAV: REPORT": (
        "REPORT", "/alice/sales/", b'<D:nonsense xmlns:D="DAV:"/>', "unknown REPORT {DAV:}nonsense",
    ),
    "REPORT in no namespace": ("REPORT", "/alice/sales/", b"<calendar-query/>", "unknown REPORT calendar-query"),
    "propfind sent as REPORT": ("REPORT", "/alice/sales/", DAV_PROPFIND, "unknown REPORT {DAV:}propfind"),
    "propfind sent as PROPPATCH": ("PROPPATCH", "/alice/sales/", DAV_PROPFIND, "not what a PROPPATCH takes"),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_malformed_requests_are_refused(hostile, case):
    method, path, body, message = REFUSED[case]
    before = stored(hostile)
    status, text = send(hostile, method, path, body, headers={**XML, "Depth": "1"})
    assert status == 400, text
    assert message in text
    assert stored(hostile) == before


@pytest.mark.parametrize("method", ["MOVE", "COPY"])
@pytest.mark.parametrize("destination", ["/alice/sales/a.ics", "http://127.0.0.1/alice/sales/a.ics"])
def test_move_or_copy_onto_itself_is_forbidden(hostile, method, destination):
    before = stored(hostile)
    status, text = send(hostile, method, "/alice/sales/a.ics", headers={"Destination": destination})
    assert status == 403, text
    assert "onto itself" in text
    assert stored(hostile) == before


def header_request(hostile, headers: list[tuple[str, str]]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", hostile.server.port, timeout=10)
    connection.putrequest("GET", "/health")
    for name, value in headers:
        connection.putheader(name, value)
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


@pytest.mark.parametrize(("count", "size"), [(101, 10), (500, 10), (20, 2000), (40, 4000)])
def test_header_ceilings(hostile, count, size):
    status = header_request(hostile, [(f"X-Hostile-{n}", "v" * size) for n in range(count)])
    assert status in (400, 431), status  # 431 from calrelay's ceilings, 400 from aiohttp's own line limits


def test_ordinary_headers_pass(hostile):
    assert header_request(hostile, [(f"X-Ok-{n}", "v" * 100) for n in range(20)]) == 200
