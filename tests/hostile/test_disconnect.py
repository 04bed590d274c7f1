"""Work stops when its request does: a client that sends an expensive REPORT and hangs up, and a shutdown
while one is busy (issue 13).

The server has one engine thread, and the budget of one request is raised far beyond what the REPORT needs,
so that only stopping it can free the thread for bob. Nothing here is timed: the tests wait for events (the
work started, the stop logged, bob answered) and look at what the index holds afterwards.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import requests

from proxy.availability.index import AvailabilityIndex, IndexRead
from proxy.availability.routes import INDEX
from proxy.keys import ENGINE
from proxy.stopping import RequestStopped, StopReason, StopSignal, signalled_by
from tests.availability.conftest import SqlStore, vcalendar, vevent
from tests.conftest import Calrelay
from tests.helpers import mkcalendar, put

EVENTS = 30
#: Each event makes 2,688 instances per 28 days (under the per-event cap of 3,000), 35,000 in a year.
RULE = "FREQ=HOURLY;BYMINUTE=0,15,30,45"
YEAR_BUCKETS = 14
FREEBUSY = (
    b'<?xml version="1.0"?><C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
    b'<C:time-range start="20261201T000000Z" end="20271130T000000Z"/></C:free-busy-query>'
)
UNBOUNDED = {"server": {"threads": 1}, "limits": {"request_seconds": 3600.0, "request_instances": 10**9}}


def dense(uid: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20261201T000000Z\r\nDTEND:20261201T000500Z\r\n"
        f"RRULE:{RULE}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def raw_report(server: Calrelay, user: str, path: str, body: bytes) -> socket.socket:
    """Send a REPORT on a plain socket (so that the test decides when the connection closes)."""
    connection = socket.create_connection(("127.0.0.1", server.server.port))
    token = base64.b64encode(f"{user}:{server.password(user)}".encode()).decode()
    head = (
        f"REPORT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {token}\r\nDepth: 1\r\n"
        f"Content-Type: application/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    connection.sendall(head.encode() + body)
    return connection


def expanded_buckets(server: Calrelay) -> int:
    """How many buckets of events the index does not list (alice's dense series past their 1,000 indexed
    instances) availability has expanded."""
    return server.app[INDEX].buckets_expanded


@pytest.fixture
def busy_alice(calrelay_factory) -> Calrelay:
    server = calrelay_factory(overrides=UNBOUNDED)
    for user in ("alice", "bob"):
        assert mkcalendar(f"{server.url}{user}/sales/", server.auth(user), "Sales", kind="round-robin").ok
    for number in range(EVENTS):
        response = put(f"{server.url}alice/sales/d{number}.ics", server.auth("alice"), dense(f"d{number}"))
        assert response.status_code == 201, response.text
    return server


def started_expanding(server: Calrelay) -> bool:
    return expanded_buckets(server) > 0


def stopped_lines(caplog: pytest.LogCaptureFixture, reason: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "proxy.stopping" and reason in r.getMessage()]


def test_a_client_that_hangs_up_frees_the_engine_for_others(busy_alice, caplog):
    caplog.set_level(logging.INFO, logger="proxy.stopping")
    connection = raw_report(busy_alice, "alice", "/alice/sales/", FREEBUSY)
    wait_for(lambda: started_expanding(busy_alice), "the free-busy REPORT expands alice's events")
    connection.close()

    wait_for(lambda: stopped_lines(caplog, "the client went away"), "the stop is logged")
    [line] = stopped_lines(caplog, "the client went away")
    assert line.startswith("stopped REPORT /alice/sales/ after ")
    # The one engine thread is free: bob's PROPFIND and availability are answered on it.
    propfind = requests.request("PROPFIND", busy_alice.url + "bob/sales/", auth=busy_alice.auth("bob"),
                                headers={"Depth": "1"}, timeout=60)
    assert propfind.status_code == 207
    bob = requests.get(f"{busy_alice.url}api/v1/users/bob/availability?start=2026-12-01T00:00:00Z"
                       "&end=2026-12-08T00:00:00Z", auth=busy_alice.auth("bob"), timeout=60)
    assert bob.status_code == 200, bob.text
    # The work stopped part-way: far from every bucket of the year is expanded, and none was added since.
    held = expanded_buckets(busy_alice)
    assert held < EVENTS * YEAR_BUCKETS, held
    assert expanded_buckets(busy_alice) == held


def test_a_client_that_waits_gets_its_answer(calrelay_factory, caplog):
    """The watch does not stop requests whose client is still there (one hourly event: about a second's work
    over the year, several looks at the connection)."""
    caplog.set_level(logging.INFO, logger="proxy.stopping")
    server = calrelay_factory(overrides=UNBOUNDED)
    assert mkcalendar(f"{server.url}alice/sales/", server.auth("alice"), "Sales", kind="round-robin").ok
    hourly = dense("d").replace(RULE, "FREQ=HOURLY")
    assert put(f"{server.url}alice/sales/d.ics", server.auth("alice"), hourly).status_code == 201
    answer = requests.request("REPORT", server.url + "alice/sales/", auth=server.auth("alice"), data=FREEBUSY,
                              headers={"Depth": "1", "Content-Type": "application/xml"}, timeout=60)
    assert answer.status_code == 200 and "FREEBUSY" in answer.text
    assert not stopped_lines(caplog, "")


def test_a_shutdown_stops_a_busy_request_and_tells_its_client(busy_alice, caplog):
    caplog.set_level(logging.INFO, logger="proxy.stopping")
    answers: list[requests.Response] = []

    def ask() -> None:
        answers.append(requests.request("REPORT", busy_alice.url + "alice/sales/", auth=busy_alice.auth("alice"),
                                        data=FREEBUSY, headers={"Depth": "1", "Content-Type": "application/xml"},
                                        timeout=120))

    client = threading.Thread(target=ask)
    client.start()
    wait_for(lambda: started_expanding(busy_alice), "the free-busy REPORT expands alice's events")
    busy_alice.server.stop()  # aiohttp's graceful shutdown: would wait for the request, here for an hour
    client.join(60)
    [answer] = answers
    assert answer.status_code == 503 and "shutting down" in answer.text
    assert answer.headers["Retry-After"]
    assert stopped_lines(caplog, "the server is shutting down")
    assert expanded_buckets(busy_alice) < EVENTS * YEAR_BUCKETS


def test_storage_reads_and_queued_calls_stop_at_the_next_check(calrelay):
    """The checks themselves, on the engine of a running server: a stopped request reads no further item,
    and a call still waiting for a thread does not start."""
    alice = calrelay.auth("alice")
    assert mkcalendar(f"{calrelay.url}alice/sales/", alice, "Sales", kind="round-robin").ok
    for number in range(3):
        assert put(f"{calrelay.url}alice/sales/e{number}.ics", alice, dense(f"e{number}")).status_code == 201
    engine = calrelay.app[ENGINE]
    assert len(engine.read_items("/alice/sales/")) == 3
    signal = StopSignal()
    signal.stop(StopReason.CLIENT_GONE)
    with signalled_by(signal), pytest.raises(RequestStopped):
        engine.read_items("/alice/sales/")
    ran: list[str] = []

    async def call_when_stopped() -> None:
        with signalled_by(signal):
            await engine.call(ran.append, "ran")

    with pytest.raises(RequestStopped):
        calrelay.run(call_when_stopped())
    assert ran == []
    assert calrelay.run(engine.call(engine.read_items, "/alice/sales/"))  # outside a stopped request: reads


def test_a_request_stopped_while_parsing_leaves_what_it_parsed(tmp_path):
    """The index reader checks between two events it parses (those the index does not list); what a stopped
    request parsed serves the next one."""
    store = SqlStore(tmp_path)
    store.add_calendar("/alice/work/")
    for number in range(10):  # beyond the horizon: not in the instance index
        store.put("/alice/work/", f"e{number}.ics", vcalendar(vevent(f"e{number}", "DTSTART:20400302T090000Z",
                                                                     "DURATION:PT1H", "RRULE:FREQ=DAILY")))
    index = AvailabilityIndex()
    signal = StopSignal()
    week = (datetime(2040, 3, 2, tzinfo=UTC), datetime(2040, 3, 9, tzinfo=UTC))

    class HangingUp:
        """The store, with a client that hangs up once four events are parsed."""

        def read_instances(self, paths, start, end):  # type: ignore[no-untyped-def]
            read = store.read_instances(paths, start, end)

            def unlisted():  # type: ignore[no-untyped-def]
                for number, item in enumerate(read.unlisted):
                    if number == 4:
                        signal.stop(StopReason.CLIENT_GONE)
                    yield item
            return IndexRead(read.rows, unlisted())

    try:
        with signalled_by(signal), pytest.raises(RequestStopped):
            index.instances(HangingUp(), ["/alice/work/"], *week, ZoneInfo("UTC"))
        assert index.parsed_items == 4
        found = index.instances(store, ["/alice/work/"], *week, ZoneInfo("UTC"))
        assert len(found.instances["/alice/work/"]) == 70
        assert index.parsed_items == 10  # the first four were not parsed again
        assert index.instances(store, ["/alice/work/"], *week, ZoneInfo("Europe/Paris")).instances
        assert index.parsed_items == 20  # another zone's items are its own
    finally:
        store.close()
