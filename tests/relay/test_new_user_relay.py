"""Relay findings of a new user trying calrelay (issue 12), against the built-in emulator."""

from __future__ import annotations

from datetime import UTC, datetime

import requests

from tests.helpers import event, put
from tests.relay.conftest import APP_PASSWORD, APPLE_ID, wait_until

START = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_the_relay_writes_to_the_calendar_home_on_the_partition_host(linked):
    """Item 7: like iCloud, the emulator serves calendar homes on the partition host only (by default);
    pushes, pulls and deletions must all go there, not to the discovery host."""
    emulator = linked.emulator
    (account,) = emulator.accounts
    home = f"{account.dsid}/calendars/work/"
    on_discovery = requests.request("PROPFIND", emulator.discovery_url + home, auth=(APPLE_ID, APP_PASSWORD),
                                    headers={"Depth": "0"}, timeout=10)
    assert on_discovery.status_code == 404
    on_partition = requests.request("PROPFIND", emulator.partition_url + home, auth=(APPLE_ID, APP_PASSWORD),
                                    headers={"Depth": "0"}, timeout=10)
    assert on_partition.status_code == 207
    crm = linked.relay.auth("crm")
    url = linked.url + "alice/sales/home-host.ics"
    assert put(url, crm, event("home-host", START)).status_code == 201
    wait_until(lambda: "home-host" in linked.icloud_store(), message="appointment in iCloud")
    assert requests.delete(url, auth=crm, timeout=10).status_code in (200, 204)
    wait_until(lambda: "home-host" not in linked.icloud_store(), message="deletion in iCloud")
    assert linked.status()["pending"] == [] and linked.status()["last_error"] is None
