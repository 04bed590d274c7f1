"""Links and the running relay: picked up without a restart, revocation, sync on demand (issues 4 and 6)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import requests

from proxy.keys import EMULATOR
from tests.helpers import event, mkcalendar, put
from tests.relay.conftest import APP_PASSWORD, APPLE_ID, Linked, wait_until

START = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def calrelay_cli(relay, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args, "--data", str(relay.data_dir)], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_link_made_by_the_cli_is_picked_up_by_the_running_server(calrelay):
    crm = calrelay.auth("crm")
    assert mkcalendar(calrelay.url + "bob/sales/", crm, "Sales", kind="collective").status_code == 201
    assert put(calrelay.url + "bob/sales/b.ics", crm, event("b", START)).status_code == 201
    done = calrelay_cli(calrelay, "link", "bob", "--apple-id", APPLE_ID, "--app-password-stdin", "--primary", "work",
                        "--server", calrelay.app[EMULATOR].discovery_url, stdin=APP_PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    linked = Linked(calrelay)
    wait_until(lambda: "b" in linked.icloud(), message="the CLI's link relays the existing appointment")


def test_revoked_app_passwords_put_the_link_into_needs_reconnect(linked):
    linked.emulator.set_faults(revoke_app_passwords=True)
    linked.sync_now()
    status = wait_until(lambda: (s := linked.status())["state"] == "needs-reconnect" and s, message="needs-reconnect")
    assert "app-specific password" in status["last_error"]
    crm = linked.relay.auth("crm")
    assert put(linked.url + "alice/sales/w.ics", crm, event("waiting", START)).status_code == 201
    pending = wait_until(lambda: linked.status()["pending"], message="the appointment is visibly pending")
    assert pending[0]["uid"] == "waiting"
    cli = calrelay_cli(linked.relay, "status", "alice")
    assert "needs-reconnect" in cli.stdout and "waiting" in cli.stdout
    # a new app-specific password (re-linking) resumes the relay and delivers the pending appointment
    linked.emulator.set_faults(revoke_app_passwords=False)
    response = requests.put(
        linked.url + "api/v1/users/alice/link", auth=crm, timeout=30,
        json={"apple_id": APPLE_ID, "app_password": APP_PASSWORD, "primary": "work", "conflicts": ["home"]},
    )
    assert response.status_code == 200
    wait_until(lambda: "waiting" in linked.icloud(), message="delivered after reconnecting")
    wait_until(lambda: linked.status()["state"] == "connected" and not linked.status()["pending"])


def test_sync_now_from_the_api_and_the_cli(linked):
    response = requests.post(linked.url + "api/v1/users/alice/sync", auth=linked.relay.auth("alice"), timeout=10)
    assert response.status_code == 202
    assert requests.post(linked.url + "api/v1/users/bob/sync", auth=linked.relay.auth("crm"),
                         timeout=10).status_code == 404
    cli = calrelay_cli(linked.relay, "sync", "alice", "--now")
    assert cli.returncode == 0, cli.stderr
    assert "alice: connected" in cli.stdout and "last pull: 20" in cli.stdout


def test_removing_a_user_removes_their_link_and_stops_their_relay(linked):
    removed = calrelay_cli(linked.relay, "users", "remove", "alice")
    assert removed.returncode == 0 and "iCloud link is removed" in removed.stdout
    wait_until(lambda: linked.worker() is None, message="the relay for alice stops")
    gone = requests.get(linked.url + "api/v1/users/alice/status", auth=linked.relay.auth("crm"), timeout=10)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "unknown_user"  # the user is gone too
