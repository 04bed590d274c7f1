"""End to end against the emulator: a large first import is visible while it runs, is logged when it ends,
and does not hold up a CRM appointment written meanwhile."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import requests

from proxy.keys import EMULATOR
from tests.helpers import event, mkcalendar, put
from tests.relay.conftest import link, stored_events, wait_until

START = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
EVENTS = 600


def seed(relay, count: int) -> None:
    """``count`` iCloud-born events straight into the emulator's store (the import is the subject, not this)."""
    store = relay.app[EMULATOR].emulator.store
    (state,) = store.accounts.values()

    async def put_all() -> None:
        for n in range(count):
            store.put_object(state, state.collections["work"], f"bulk-{n}.ics",
                             event(f"bulk-{n}", START + timedelta(hours=n)), f"bulk-{n}", "VEVENT")

    relay.run(put_all(), timeout=120)


def test_a_large_import_shows_progress_ends_with_a_log_line_and_lets_a_push_through(calrelay_factory, caplog):
    relay = calrelay_factory(overrides={"upstream": {"poll_interval": 3600, "import_batch": 100}})
    crm = relay.auth("crm")
    assert mkcalendar(relay.url + "alice/sales/", crm, "Sales", kind="round-robin").status_code == 201
    seed(relay, EVENTS)
    caplog.set_level(logging.INFO, logger="proxy.relay.pull")

    def status() -> dict:
        response = requests.get(relay.url + "api/v1/users/alice/status", auth=crm, timeout=10)
        response.raise_for_status()
        return response.json()

    link(relay)
    running = wait_until(lambda: (c := status()["calendars"][0])["import"] and c, timeout=30, message="import")
    # While it runs, the progress says how far it is and "last pull" is not set yet.
    assert running["last_pull"] is None
    report = running["import"]
    assert report["total"] == EVENTS and 0 <= report["written"] <= report["fetched"] <= EVENTS
    # A CRM appointment written now reaches iCloud before the import is over.
    written = time.monotonic()
    assert put(relay.url + "alice/sales/during.ics", crm, event("during", START - timedelta(days=1))).status_code == 201
    wait_until(lambda: "during" in stored_events(relay.app[EMULATOR]), timeout=20, message="push during import")
    delay = time.monotonic() - written
    still = status()["calendars"][0]
    assert still["import"] is not None or delay < 5, (delay, still)  # an order of magnitude over the 1 s target
    done = wait_until(lambda: (c := status()["calendars"][0])["last_pull"] and c, timeout=120, message="import end")
    assert done["import"] is None
    assert any(f"done: {EVENTS} events" in r.getMessage() for r in caplog.records), [r.getMessage()
                                                                                     for r in caplog.records]

