"""The relay end to end on each backend of its state: CRM create, update and delete reach iCloud, an iCloud
event is pulled into the mirror, the CLI (another process) reads the same state, and a restarted server finds
its link in the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import requests

from proxy import cli
from proxy.keys import STATE
from tests.helpers import event, put
from tests.relay.conftest import make_linked, stored_events, wait_until
from tests.relay.test_pull import icloud_put

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
OVERRIDES = {"poll_interval": 1.0, "min_backoff": 0.2, "max_backoff": 1.0}


def test_relay_round_trip_on_each_backend(calrelay_factory, database_url, tmp_path, capsys):
    data = tmp_path / "data"
    relay = calrelay_factory(data_dir=data, overrides={"storage": {"database": database_url}, "upstream": OVERRIDES})
    linked = make_linked(relay)
    crm = relay.auth("crm")
    url = relay.url + "alice/sales/a.ics"
    assert put(url, crm, event("a", START, summary="First")).status_code == 201
    wait_until(lambda: "SUMMARY:First" in stored_events(linked.emulator).get("a", ""), message="created")
    assert put(url, crm, event("a", START + timedelta(hours=1), summary="Moved")).status_code == 204
    wait_until(lambda: "SUMMARY:Moved" in stored_events(linked.emulator).get("a", ""), message="updated")
    icloud_put(linked, "work", "lunch.ics", event("lunch", START + timedelta(days=1), summary="Lunch"))
    db = relay.app[STATE].db
    wait_until(lambda: {i.uid: i.origin for i in db.items("alice")}.get("lunch") == "ICLOUD", message="pulled")
    assert requests.delete(url, auth=crm, timeout=10).status_code in (200, 204)
    wait_until(lambda: "a" not in stored_events(linked.emulator), message="deleted")
    wait_until(lambda: linked.status()["pending"] == [] and [i.uid for i in db.items("alice")] == ["lunch"],
               message="nothing pending, only the iCloud event's status left")
    assert (linked.worker().stats["pushed"], linked.worker().stats["deleted"]) == (2, 1)  # each exactly once

    config_file = tmp_path / "calrelay.toml"
    config_file.write_text(f'[storage]\ndata_dir = "{data}"\ndatabase = "{database_url}"\n')
    capsys.readouterr()
    assert cli.main(["status", "alice", "--json", "--config", str(config_file)]) == 0
    assert '"state": "connected"' in capsys.readouterr().out

    relay.server.stop()
    again = calrelay_factory(data_dir=data, overrides={"storage": {"database": database_url}, "upstream": OVERRIDES})
    status = requests.get(again.url + "api/v1/users/alice/status", auth=crm, timeout=10).json()
    assert status["linked"] and status["apple_id"] == "demo@icloud.test"
