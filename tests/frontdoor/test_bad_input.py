"""Bad input gets a 4xx with a message that says what to fix, and the store does not change."""

from __future__ import annotations

import base64
import http.client
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from proxy import database
from proxy.keys import AUTHENTICATOR
from tests.helpers import event, mkcalendar, put

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&lol3;</D:displayname></D:prop></D:propfind>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&xxe;</D:displayname></D:prop></D:propfind>"""


def snapshot(calrelay) -> dict[str, object]:
    """Every stored file except the database's, and every row of the database."""
    files: dict[str, object] = {}
    data_dir = calrelay.data_dir
    for root, _dirs, names in os.walk(data_dir):
        for name in names:
            if not name.startswith("calrelay.db"):
                path = Path(root, name)
                files[str(path.relative_to(data_dir))] = path.read_bytes()
    engine = database.create_engine(calrelay.settings.database_url)
    try:
        with database.reading(engine) as connection:
            for table in database.metadata.sorted_tables:
                if sa.inspect(connection).has_table(table.name):
                    files[f"table {table.name}"] = sorted(map(tuple, connection.execute(sa.select(table))))
    finally:
        engine.dispose()
    return files


def raw(calrelay, method: str, path: str, body: bytes = b"", user: str = "alice", **headers: str):
    """Send exactly ``path`` (no client-side normalisation) and return (status, text)."""
    connection = http.client.HTTPConnection("127.0.0.1", calrelay.server.port, timeout=10)
    token = base64.b64encode(f"{user}:{calrelay.password(user)}".encode()).decode()
    connection.request(method, path, body=body, headers={"Authorization": f"Basic {token}", **headers})
    response = connection.getresponse()
    result = response.status, response.read().decode("utf-8", "replace")
    connection.close()
    return result


@pytest.fixture
def prepared(calrelay):
    alice = calrelay.auth("alice")
    assert mkcalendar(calrelay.url + "alice/sales/", alice, "Sales", kind="round-robin").status_code == 201
    assert put(calrelay.url + "alice/sales/a.ics", alice, event("a", START)).status_code == 201
    return calrelay


CASES = {
    "oversized body": (
        "PUT", "/alice/sales/big.ics", b"X" * 10_000_001, {"Content-Type": "text/calendar"}, 413, "too large",
    ),
    "malformed iCalendar": (
        "PUT", "/alice/sales/b.ics", b"BEGIN:VCALENDAR\r\nthis is not ical\r\n",
        {"Content-Type": "text/calendar"}, 400, "b.ics",
    ),
    "unknown event kind": (
        "PUT", "/alice/sales/c.ics", event("c", START, kind="MEETING").encode(),
        {"Content-Type": "text/calendar"}, 400, "APPOINTMENT, BLOCKED",
    ),
    "unknown calendar kind on MKCALENDAR": (
        "MKCALENDAR", "/alice/weekly/",
        b'<?xml version="1.0"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" '
        b'xmlns:CR="urn:calrelay"><D:set><D:prop><CR:calendar-kind>weekly</CR:calendar-kind></D:prop></D:set>'
        b"</C:mkcalendar>", {"Content-Type": "application/xml"}, 400, "round-robin, collective, class-booking",
    ),
    "unknown calendar kind on PROPPATCH": (
        "PROPPATCH", "/alice/sales/",
        b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:CR="urn:calrelay"><D:set><D:prop>'
        b"<CR:calendar-kind>Simple Calendar</CR:calendar-kind></D:prop></D:set></D:propertyupdate>",
        {"Content-Type": "application/xml"}, 400, "use one of round-robin",
    ),
    "client sets a mirror role": (
        "PROPPATCH", "/alice/sales/",
        b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:CR="urn:calrelay"><D:set><D:prop>'
        b"<CR:mirror-role>conflict</CR:mirror-role></D:prop></D:set></D:propertyupdate>",
        {"Content-Type": "application/xml"}, 400, "managed by calrelay",
    ),
    "entity expansion": ("PROPFIND", "/alice/", BILLION_LAUGHS, {"Depth": "0"}, 400, "DTD"),
    "external entity": ("PROPFIND", "/alice/", EXTERNAL_ENTITY, {"Depth": "0"}, 400, "DTD"),
    "malformed XML": ("REPORT", "/alice/sales/", b"<D:propfind xmlns:D='DAV:'><unclosed>", {}, 400, "not well-formed"),
    "dot-dot segment": ("PUT", "/alice/../bob/x.ics", event("x", START).encode(), {}, 400, "'..'"),
    "encoded dot-dot": ("GET", "/alice/%2e%2e/bob/", b"", {}, 400, "'..'"),
    "encoded slash": ("PUT", "/alice/sales%2Fx.ics", event("x", START).encode(), {}, 400, "encoded '/'"),
    "backslash": ("GET", "/alice\\..\\bob/", b"", {}, 400, "backslash"),
    "empty segment": ("PUT", "/alice//sales/y.ics", event("y", START).encode(), {}, 400, "'//'"),
    "nested collection": ("MKCALENDAR", "/alice/sales/inner/", b"", {}, 403, ""),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_refused_with_a_message_and_store_unchanged(prepared, case):
    method, path, body, headers, status, message = CASES[case]
    before = snapshot(prepared)
    got_status, text = raw(prepared, method, path, body, **headers)
    assert got_status == status, text
    assert message in text
    assert snapshot(prepared) == before


def test_wrong_password_is_refused_and_slowed_down(calrelay_factory):
    server = calrelay_factory(overrides={"auth": {"failed_login_delay": 0.2, "max_failed_login_delay": 0.4}})
    authenticator = server.app[AUTHENTICATOR]
    timings = []
    for _ in range(3):
        started = time.monotonic()
        response = requests.request("PROPFIND", server.url + "alice/", auth=("alice", "wrong"), timeout=10)
        timings.append(time.monotonic() - started)
        assert response.status_code == 401
        assert "Wrong user name or password" in response.text
    assert timings[1] >= 0.2 and timings[2] >= 0.4  # the first failure is answered at once, then 0.2, 0.4
    assert authenticator.penalty("127.0.0.1", "alice") == 0.4  # capped at max_failed_login_delay
    # the right password still works, and clears the penalty
    assert requests.request("PROPFIND", server.url + "alice/", auth=server.auth("alice"), timeout=10).ok
    assert authenticator.penalty("127.0.0.1", "alice") == 0.0
