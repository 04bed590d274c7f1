"""Relay findings of a new user trying calrelay (issue 12), against the built-in emulator."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime

import requests

from tests.conftest import write_users
from tests.helpers import event, free_port, mkcalendar, put
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


def calrelay_cli(data_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args, "--data", str(data_dir)], capture_output=True,
                          text=True, timeout=120)


def test_sync_now_without_a_running_server_says_so_at_once(linked):
    """Item 13: not after the 60 s timeout."""
    data_dir = linked.relay.data_dir
    assert calrelay_cli(data_dir, "sync", "alice", "--now").returncode == 0  # the server runs: it pulls
    linked.relay.server.stop()
    stopped = calrelay_cli(data_dir, "sync", "alice", "--now", "--timeout", "600")
    assert stopped.returncode == 1 and "no `calrelay serve` is running" in stopped.stderr, stopped.stderr


def test_stopping_serve_says_it_stopped_and_what_was_left_pending(tmp_path):
    """Item 19: the last lines of a stopped server say that it stopped and whether work is left for iCloud."""
    data = tmp_path / "data"
    write_users(data / "users", {"alice": ("alice-pw", False), "crm": ("crm-pw", True)})
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--data", str(data), "--port", str(port), "--emulator-port", "0",
         "--emulator-partition-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: _healthy(url), timeout=30, message="calrelay serve answers")
        crm = ("crm", "crm-pw")
        assert mkcalendar(url + "alice/sales/", crm, "Sales", kind="round-robin").status_code == 201
        linked = requests.put(url + "api/v1/users/alice/link", auth=crm, timeout=30,
                              json={"apple_id": APPLE_ID, "app_password": APP_PASSWORD, "primary": "work"})
        assert linked.status_code == 200, linked.text
        # iCloud refuses this one for good (a UID held by another calendar), so it stays pending.
        emulator = linked.json()["server"]
        home = next(c["url"] for c in linked.json()["calendars"] if c["name"] == "work").replace("/work/", "/home/")
        assert put(home + "taken.ics", (APPLE_ID, APP_PASSWORD), event("taken", START)).status_code == 201, emulator
        assert put(url + "alice/sales/taken.ics", crm, event("taken", START)).status_code == 201
        wait_until(lambda: requests.get(url + "api/v1/users/alice/status", auth=crm, timeout=10).json()["pending"],
                   message="the refused appointment is pending")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "relay stopped with 1 pending item not yet in iCloud" in output, output
    assert output.rstrip().splitlines()[-1].endswith("calrelay stopped"), output


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "health", timeout=1).ok
    except requests.ConnectionError:
        return False


def test_status_forgets_a_recovered_error_and_a_replaced_sync_token(linked):
    """Item 10: after recovery the status shows neither the old "retrying in N s" nor ``token: refused``."""
    linked.emulator.set_faults(throttle_seconds=60, retry_after=1)
    linked.sync_now()
    wait_until(lambda: "retrying in" in (linked.status()["last_error"] or ""), message="the pause is reported")
    linked.emulator.clear_faults()
    wait_until(lambda: (linked.sync_now(), linked.status()["last_error"] is None)[1], timeout=30,
               message="the error is gone after recovery")
    # iCloud refuses an expired token: the relay compares ETags once, then holds a fresh token.
    worker = linked.worker()
    work = next(c for c in worker.calendars.values() if c.remote_name == "work")
    worker.calendars[work.remote_url] = replace(work, sync_token="expired-token", token_state="valid", ctag=None)
    # A pull already running when the token was replaced may finish without using it: wait for one that did.
    wait_until(lambda: (linked.sync_now(), worker.calendars[work.remote_url].sync_token != "expired-token")[1],
               message="a pull with the expired token, which the relay replaced")
    assert _work(linked)["token_state"] == "valid"


def _work(linked) -> dict:
    return next(c for c in linked.status()["calendars"] if c["name"] == "work")


def test_throttled_answers_log_no_caldav_xml_traceback(linked, caplog):
    """Item 11: python-caldav's "Expected some valid XML" (with a traceback) for each throttled answer."""
    caplog.set_level(logging.INFO)
    linked.emulator.set_faults(throttle_seconds=60, retry_after=1)
    linked.sync_now()
    wait_until(lambda: "retrying in" in (linked.status()["last_error"] or ""), message="the pause is reported")
    messages = [record.getMessage() for record in caplog.records]
    assert any("throttled (HTTP 503" in message for message in messages), messages
    assert not [m for m in messages if "Expected some valid XML" in m]
    assert not [r for r in caplog.records if r.exc_info]
