"""Every change the relay must see fires exactly one signal, delivered on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import pytest
import requests

from plugins.scope import Change, ChangeAction
from proxy.keys import CHANGES
from tests.helpers import event, mkcalendar, proppatch_kind, put

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class Recorded:
    def __init__(self, calrelay) -> None:
        self.changes: list[Change] = []
        self.threads: set[str] = set()

        def on_change(change: Change) -> None:
            asyncio.get_running_loop()  # raises unless delivered on the event loop
            self.threads.add(threading.current_thread().name)
            self.changes.append(change)

        async def subscribe() -> None:
            calrelay.app[CHANGES].subscribe(on_change)

        calrelay.run(subscribe())

    def take(self, expected: int) -> list[tuple[ChangeAction, str, str | None, str | None]]:
        deadline = time.monotonic() + 5
        while len(self.changes) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # anything extra would show up now
        taken = [(c.action, c.path, c.href, c.target) for c in self.changes]
        self.changes.clear()
        return taken


@pytest.fixture
def recorded(calrelay):
    return Recorded(calrelay)


def test_each_path_fires_exactly_once(calrelay, recorded):
    alice = calrelay.auth("alice")
    base = calrelay.url + "alice/"

    assert mkcalendar(base + "sales/", alice, "Sales", kind="collective").status_code == 201
    assert recorded.take(1) == [(ChangeAction.COLLECTION_CREATE, "/alice/sales/", None, None)]

    assert proppatch_kind(base + "sales/", alice, "service").status_code == 207
    assert recorded.take(1) == [(ChangeAction.COLLECTION_PROPS, "/alice/sales/", None, None)]

    assert put(base + "sales/a.ics", alice, event("a", START)).status_code == 201
    assert recorded.take(1) == [(ChangeAction.ITEM_PUT, "/alice/sales/", "a.ics", None)]

    assert put(base + "sales/a.ics", alice, event("a", START, summary="moved")).status_code == 204
    assert recorded.take(1) == [(ChangeAction.ITEM_PUT, "/alice/sales/", "a.ics", None)]

    assert mkcalendar(base + "other/", alice, "Other", kind="service").status_code == 201
    recorded.take(1)
    moved = requests.request(
        "MOVE", base + "sales/a.ics", auth=alice, headers={"Destination": base + "other/a.ics"}, timeout=10
    )
    assert moved.status_code == 201
    assert recorded.take(1) == [(ChangeAction.ITEM_MOVE, "/alice/sales/", "a.ics", "/alice/other/")]

    assert requests.delete(base + "other/a.ics", auth=alice, timeout=10).status_code in (200, 204)
    assert recorded.take(1) == [(ChangeAction.ITEM_DELETE, "/alice/other/", "a.ics", None)]

    whole = event("b", START).replace("END:VCALENDAR", "BEGIN:VEVENT\r\nUID:c\r\nDTSTAMP:20261121T000000Z\r\n"
                                      "DTSTART:20261202T090000Z\r\nDTEND:20261202T100000Z\r\nEND:VEVENT\r\n"
                                      "END:VCALENDAR")
    assert put(base + "imported/", alice, whole).status_code == 201
    assert recorded.take(1) == [(ChangeAction.COLLECTION_CREATE, "/alice/imported/", None, None)]

    assert requests.delete(base + "imported/", auth=alice, timeout=10).status_code in (200, 204)
    assert recorded.take(1) == [(ChangeAction.COLLECTION_DELETE, "/alice/imported/", None, None)]

    assert recorded.threads == {"test-server"}  # the loop's thread, never a Radicale worker


def test_reads_and_refusals_fire_nothing(calrelay, recorded):
    alice = calrelay.auth("alice")
    base = calrelay.url + "alice/"
    assert mkcalendar(base + "sales/", alice, "Sales", kind="round-robin").status_code == 201
    recorded.take(1)
    assert requests.request("PROPFIND", base, auth=alice, headers={"Depth": "1"}, timeout=10).status_code == 207
    assert requests.get(base + "sales/", auth=alice, timeout=10).status_code == 200
    assert put(base + "sales/x.ics", alice, "not a calendar").status_code == 400
    assert proppatch_kind(base + "sales/", alice, "weekly").status_code == 400
    assert put(base + "sales/x.ics", calrelay.auth("bob"), event("x", START)).status_code == 403
    assert recorded.take(0) == []
