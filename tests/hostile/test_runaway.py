"""The runaway recurrence end to end, against a real ``calrelay serve`` process (issue 13).

A SECONDLY or MINUTELY rule without an end is refused on write. One that is already stored (written before the
check existed; here straight into the storage, past its checks) is capped: availability for a year, busy-reasons, the
free-busy REPORT and calendar-query (with and without ``expand``) each answer in under a second with a 4xx or
a capped answer, the server's RSS stays under its bound, bob's requests keep answering, and SIGTERM right
after still stops the server within its shutdown time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from radicale import item as radicale_item

from plugins.sqlstore import collection as sqlstore_collection
from plugins.sqlstore import storage as sqlstore_storage
from proxy import config
from proxy.engine import radicale_configuration
from tests.conftest import write_users
from tests.helpers import free_port, mkcalendar, put

#: The stated bound on the server's resident memory under a stream of hostile requests.
RSS_BOUND_MB = 500
SHUTDOWN_TIMEOUT = 3.0
USERS = {"alice": ("alice-secret", False), "bob": ("bob-secret", False)}
ALICE, BOB = ("alice", "alice-secret"), ("bob", "bob-secret")
YEAR = "start=2026-12-01T00:00:00Z&end=2027-11-30T00:00:00Z"


def runaway(uid: str, freq: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260101T000000Z\r\nDTEND:20260101T000001Z\r\n"
        f"SUMMARY:Runaway\r\nRRULE:FREQ={freq}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


@dataclass
class Served:
    process: subprocess.Popen
    url: str
    data: Path

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("runaway")
    data = root / "data"
    port = free_port()
    config = root / "calrelay.toml"
    config.write_text(
        f'[server]\nshutdown_timeout = {SHUTDOWN_TIMEOUT}\n[storage]\ndata_dir = "{data}"\n'
        "[auth]\nfailed_login_delay = 0.0\n[emulator]\nport = 0\npartition_port = 0\n"
    )
    write_users(data / "users", USERS)
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "health", timeout=1).ok:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, "calrelay serve did not come up"
        time.sleep(0.1)
    for user, auth in (("alice", ALICE), ("bob", BOB)):
        assert mkcalendar(f"{url}{user}/sales/", auth, "Sales", kind="round-robin").status_code == 201
    try:
        yield Served(process, url, data)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def timed(method: str, url: str, auth: tuple[str, str], **kwargs) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.request(method, url, auth=auth, timeout=30, **kwargs)
    return response, time.monotonic() - started


def collection_files(data: Path, user: str) -> set[str]:
    """The hrefs stored in ``user``'s booking calendar."""
    storage = _plain_storage(data)
    try:
        with storage.acquire_lock("r"):
            collection = next(iter(storage.discover(f"/{user}/sales/")))
            return {item.href for item in collection.get_all()}
    finally:
        storage.close()


def _plain_storage(data: Path) -> sqlstore_storage.Storage:
    """The SQL storage without calrelay's write-time checks: what stored objects before those checks existed."""
    settings = config.load(overrides={"storage": {"data_dir": str(data)}})
    return sqlstore_storage.Storage(radicale_configuration(settings))


def store_behind_calrelays_back(data: Path, path: str, href: str, text: str) -> None:
    storage = _plain_storage(data)
    try:
        with storage.acquire_lock("w"):
            collection = next(iter(storage.discover(path)))
            components = radicale_item.read_components(text)
            item = radicale_item.Item(collection_path=path.strip("/"), vobject_item=components[0])
            item.prepare()
            sqlstore_collection.Collection.upload(collection, href, item)
    finally:
        storage.close()


@pytest.mark.parametrize("freq", ["SECONDLY", "MINUTELY"])
def test_runaway_put_is_refused_at_once(served, freq):
    before = collection_files(served.data, "alice")
    response, elapsed = timed("PUT", served.url + f"alice/sales/{freq}.ics", ALICE, data=runaway(freq, freq),
                              headers={"Content-Type": "text/calendar"})
    assert response.status_code == 400, response.text
    assert f"FREQ={freq}" in response.text and "limits.min_frequency" in response.text
    assert elapsed < 1.0
    assert collection_files(served.data, "alice") == before


FREEBUSY = (
    '<?xml version="1.0"?><C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
    '<C:time-range start="20261201T000000Z" end="20271130T000000Z"/></C:free-busy-query>'
)


def calendar_query(expand: bool) -> str:
    expand_xml = '<C:expand start="20261201T000000Z" end="20271130T000000Z"/>' if expand else ""
    return (
        '<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        f"<D:prop><C:calendar-data>{expand_xml}</C:calendar-data></D:prop>"
        '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        '<C:time-range start="20261201T000000Z" end="20271130T000000Z"/></C:comp-filter></C:comp-filter>'
        "</C:filter></C:calendar-query>"
    )


def hostile_requests(url: str) -> list[tuple[str, str, dict]]:
    xml = {"Content-Type": "application/xml", "Depth": "1"}
    return [
        ("GET", f"{url}api/v1/users/alice/availability?{YEAR}", {}),
        ("GET", f"{url}api/v1/users/alice/busy-reasons?at=2027-03-01T10:00:00Z", {}),
        ("REPORT", f"{url}alice/sales/", {"data": FREEBUSY, "headers": xml}),
        ("REPORT", f"{url}alice/sales/", {"data": calendar_query(expand=True), "headers": xml}),
        ("REPORT", f"{url}alice/sales/", {"data": calendar_query(expand=False), "headers": xml}),
    ]


def test_stored_runaway_is_capped_everywhere(served):
    # Written behind calrelay's back, as an object stored before the write-time check existed would be.
    for freq in ("SECONDLY", "MINUTELY"):
        uid = f"legacy-{freq.lower()}"
        store_behind_calrelays_back(served.data, "/alice/sales/", f"{uid}.ics", runaway(uid, freq))
    assert put(served.url + "bob/sales/b.ics", BOB, runaway("b", "WEEKLY")).status_code == 201

    availability, elapsed = timed("GET", f"{served.url}api/v1/users/alice/availability?{YEAR}", ALICE)
    assert availability.status_code == 200, availability.text
    assert elapsed < 1.0
    busy = availability.json()["busy"]
    assert busy and busy[0]["start"] == "2026-12-01T00:00:00Z" and busy[-1]["end"] == "2027-11-30T00:00:00Z"
    assert len(busy) == 1  # never free: the whole year is busy
    assert all(source["too_many_instances"] for source in busy[0]["sources"])

    reasons, elapsed = timed("GET", f"{served.url}api/v1/users/alice/busy-reasons?at=2027-03-01T10:00:00Z", ALICE)
    assert reasons.status_code == 200 and elapsed < 1.0
    assert "too many instances" in reasons.text

    for method, url, kwargs in hostile_requests(served.url)[2:]:
        response, elapsed = timed(method, url, ALICE, **kwargs)
        assert response.status_code < 500, (url, response.status_code, response.text[:300])
        assert elapsed < 1.0, (kwargs.get("data", "")[:80], elapsed)
    for expand in (False, True):
        query, _ = timed("REPORT", served.url + "alice/sales/", ALICE, data=calendar_query(expand),
                         headers={"Content-Type": "application/xml", "Depth": "1"})
        assert query.status_code == 400 and "too many to expand" in query.text, query.text
    multiget = (
        '<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        '<D:prop><C:calendar-data><C:expand start="20261201T000000Z" end="20271130T000000Z"/></C:calendar-data>'
        "</D:prop><D:href>/alice/sales/legacy-secondly.ics</D:href></C:calendar-multiget>"
    )
    response, elapsed = timed("REPORT", served.url + "alice/sales/", ALICE, data=multiget,
                              headers={"Content-Type": "application/xml", "Depth": "1"})
    assert response.status_code == 400 and "too many to expand" in response.text and elapsed < 1.0
    # The object itself can still be read, so that its owner can fix or delete it.
    assert requests.get(served.url + "alice/sales/legacy-secondly.ics", auth=ALICE, timeout=10).status_code == 200
    freebusy, _ = timed("REPORT", served.url + "alice/sales/", ALICE, data=FREEBUSY,
                        headers={"Content-Type": "application/xml", "Depth": "1"})
    assert "FREEBUSY" in freebusy.text and "20261201T000000Z/20271130T000000Z" in freebusy.text.replace("\r\n ", "")


def test_hostile_stream_keeps_memory_bounded_and_other_users_answered(served):
    requests_ = hostile_requests(served.url)
    bob_latencies: list[float] = []

    def hammer(number: int) -> int:
        method, url, kwargs = requests_[number % len(requests_)]
        return timed(method, url, ALICE, **kwargs)[0].status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = pool.map(hammer, range(60))
        for _ in range(10):
            _, elapsed = timed("PROPFIND", served.url + "bob/sales/", BOB, headers={"Depth": "1"})
            bob_latencies.append(elapsed)
            bob, _ = timed("GET", f"{served.url}api/v1/users/bob/availability?{YEAR}", BOB)
            assert bob.status_code == 200
        assert all(status < 500 for status in statuses)
    assert max(bob_latencies) < 1.0, bob_latencies
    assert served.rss_mb() < RSS_BOUND_MB


def test_sigterm_right_after_stops_in_time(served):
    with ThreadPoolExecutor(2) as pool:
        for method, url, kwargs in hostile_requests(served.url):
            pool.submit(timed, method, url, ALICE, **kwargs)
        time.sleep(0.05)  # let the requests reach the server; nothing here waits for something not to happen
        started = time.monotonic()
        os.kill(served.process.pid, signal.SIGTERM)
        # The process itself has ended (not only stopped answering): 0 when everything finished in time, 1 when
        # its deadline ended what still ran. A second or two of slack for a loaded machine.
        assert served.process.wait(SHUTDOWN_TIMEOUT + 10) in (0, 1)
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT + 2
