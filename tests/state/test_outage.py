"""PostgreSQL stopped and started again under a running calrelay: 503 with Retry-After while it is down,
the relay pauses (logged once), and everything resumes by itself, with nothing lost or duplicated."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import requests

from proxy.keys import RELAY
from tests.helpers import event, put
from tests.relay.conftest import make_linked, stored_events, wait_until
from tests.state.postgres import PostgresCluster

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PROPFIND = b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>'


def test_postgres_outage_gives_503_pauses_the_relay_and_recovers_without_restart(calrelay_factory, caplog):
    cluster = PostgresCluster()
    try:
        relay = calrelay_factory(overrides={
            "storage": {"database": cluster.fresh_database("outage")},
            "upstream": {"poll_interval": 1.0, "min_backoff": 0.2, "max_backoff": 2.0},
        })
        linked = make_linked(relay)
        crm = relay.auth("crm")
        status_url = relay.url + "api/v1/users/alice/status"
        assert put(relay.url + "alice/sales/before.ics", crm, event("before", START)).status_code == 201
        wait_until(lambda: "before" in stored_events(linked.emulator), message="pushed before the outage")
        worker_task = relay.app[RELAY]._workers["alice"][1]

        caplog.set_level(logging.WARNING, logger="proxy.outage")
        cluster.stop()
        for _ in range(3):
            response = requests.get(status_url, auth=crm, timeout=10)
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"].isdigit()
            assert response.json()["error"]["code"] == "database_unavailable"
        health = requests.get(relay.url + "health", timeout=10)  # what a load balancer's check sees
        assert health.status_code == 503 and health.json()["database"] == "unavailable"
        relinked = requests.put(relay.url + "api/v1/users/alice/link", auth=crm, timeout=10,
                                json={"apple_id": "demo@icloud.test", "app_password": "abcd-efgh-ijkl-mnop",
                                      "primary": "work"})
        assert relinked.status_code == 503 and "Retry-After" in relinked.headers
        # CalDAV is never a 500: served (while calendars are files) or refused with Retry-After.
        listing = requests.request("PROPFIND", relay.url + "alice/sales/", auth=crm, data=PROPFIND,
                                   headers={"Depth": "1"}, timeout=10)
        assert listing.status_code == 207 or (listing.status_code == 503 and "Retry-After" in listing.headers)
        written = put(relay.url + "alice/sales/during.ics", crm, event("during", START))
        assert written.status_code == 201 or (written.status_code == 503 and "Retry-After" in written.headers)
        # The relay tries to push the new appointment, meets the outage, and pauses instead of failing.
        passes = linked.worker().passes
        wait_until(lambda: any("database unavailable" in r.getMessage() for r in caplog.records),
                   message="outage noticed")
        assert not worker_task.done()
        assert linked.worker().passes == passes  # no pass completed without its state

        cluster.start()
        wait_until(lambda: requests.get(status_url, auth=crm, timeout=10).status_code == 200, timeout=30,
                   message="API back")
        expected = {"before", "during"} if written.status_code == 201 else {"before"}
        wait_until(lambda: set(stored_events(linked.emulator)) == expected, timeout=60,
                   message="relay resumed by itself")
        wait_until(lambda: linked.status()["pending"] == [], timeout=30, message="nothing pending")
        assert relay.app[RELAY]._workers["alice"][1] is worker_task and not worker_task.done()  # never restarted
        status = linked.status()
        assert status["linked"] and status["state"] == "connected"
        health = requests.get(relay.url + "health", timeout=10).json()
        assert health["database"] == "ok" and health["leases"] == 1
        assert status["relayed_by"]["instance"] == health["instance"]
        assert len(stored_events(linked.emulator)) == len(expected)  # nothing duplicated
        outage_logs = [r.getMessage() for r in caplog.records if r.name == "proxy.outage"]
        assert sum("unavailable" in m for m in outage_logs) == 1, outage_logs  # logged once, not per request
        assert sum("available again" in m for m in outage_logs) == 1, outage_logs
    finally:
        cluster.remove()
