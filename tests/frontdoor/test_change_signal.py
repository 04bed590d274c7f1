"""Every change the relay must see fires exactly one signal, delivered on the event loop."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest
import requests

from plugins.scope import Change, ChangeAction
from proxy.keys import CHANGES
from tests.helpers import event, mkcalendar, proppatch_kind, put

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


#: Published by the test after a request: the bus delivers in order, so once the marker has arrived, every
#: change the request published (before its response was sent) has arrived too. No sleep, no deadline guess.
MARKER = Change(ChangeAction.COLLECTION_PROPS, "/-marker-/")


class Recorded:
    def __init__(self, calrelay) -> None:
        self.changes: list[Change] = []
        self.threads: set[str] = set()
        self.bus = calrelay.app[CHANGES]
        self.marked = threading.Event()

        def on_change(change: Change) -> None:
            asyncio.get_running_loop()  # raises unless delivered on the event loop
            self.threads.add(threading.current_thread().name)
            if change == MARKER:
                self.marked.set()
            else:
                self.changes.append(change)

        async def subscribe() -> None:
            self.bus.subscribe(on_change)

        calrelay.run(subscribe())

    def take(self) -> list[tuple[ChangeAction, str, str | None, str | None]]:
        """Every change delivered since the last take (all the requests made since have answered)."""
        self.marked.clear()
        self.bus.publish(MARKER)
        assert self.marked.wait(10), "the change bus delivered nothing"
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
    assert recorded.take() == [(ChangeAction.COLLECTION_CREATE, "/alice/sales/", None, None)]

    assert proppatch_kind(base + "sales/", alice, "service").status_code == 207
    assert recorded.take() == [(ChangeAction.COLLECTION_PROPS, "/alice/sales/", None, None)]

    assert put(base + "sales/a.ics", alice, event("a", START)).status_code == 201
    assert recorded.take() == [(ChangeAction.ITEM_PUT, "/alice/sales/", "a.ics", None)]

    assert put(base + "sales/a.ics", alice, event("a", START, summary="moved")).status_code == 204
    assert recorded.take() == [(ChangeAction.ITEM_PUT, "/alice/sales/", "a.ics", None)]

    assert mkcalendar(base + "other/", alice, "Other", kind="service").status_code == 201
    recorded.take()
    moved = requests.request(
        "MOVE", base + "sales/a.ics", auth=alice, headers={"Destination": base + "other/a.ics"}, timeout=10
    )
    assert moved.status_code == 201
    assert recorded.take() == [(ChangeAction.ITEM_MOVE, "/alice/sales/", "a.ics", "/alice/other/")]

    assert requests.delete(base + "other/a.ics", auth=alice, timeout=10).status_code in (200, 204)
    assert recorded.take() == [(ChangeAction.ITEM_DELETE, "/alice/other/", "a.ics", None)]

    whole = event("b", START).replace("END:VCALENDAR", "BEGIN:VEVENT\r\nUID:c\r\nDTSTAMP:20261121T000000Z\r\n"
                                      "DTSTART:20261202T090000Z\r\nDTEND:20261202T100000Z\r\nEND:VEVENT\r\n"
                                      "END:VCALENDAR")
    assert put(base + "imported/", alice, whole).status_code == 201
    assert recorded.take() == [(ChangeAction.COLLECTION_CREATE, "/alice/imported/", None, None)]

    assert requests.delete(base + "imported/", auth=alice, timeout=10).status_code in (200, 204)
    assert recorded.take() == [(ChangeAction.COLLECTION_DELETE, "/alice/imported/", None, None)]

    assert recorded.threads == {"test-server"}  # the loop's thread, never a Radicale worker


def test_reads_and_refusals_fire_nothing(calrelay, recorded):
    alice = calrelay.auth("alice")
    base = calrelay.url + "alice/"
    assert mkcalendar(base + "sales/", alice, "Sales", kind="round-robin").status_code == 201
    recorded.take()
    assert requests.request("PROPFIND", base, auth=alice, headers={"Depth": "1"}, timeout=10).status_code == 207
    assert requests.get(base + "sales/", auth=alice, timeout=10).status_code == 200
    assert put(base + "sales/x.ics", alice, "not a calendar").status_code == 400
    assert proppatch_kind(base + "sales/", alice, "weekly").status_code == 400
    assert put(base + "sales/x.ics", calrelay.auth("bob"), event("x", START)).status_code == 403
    assert recorded.take() == []
