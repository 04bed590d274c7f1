"""Crash safety: calrelay is SIGKILLed in the middle of relaying a burst and restarted (issue 5).

The emulator runs in the test process (iCloud does not die with calrelay); calrelay runs as a real
``calrelay serve`` subprocess over a data directory that survives the kills.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from proxy.emulator import EmulatorServer
from tests.conftest import write_users
from tests.helpers import event, free_port, mkcalendar, put
from tests.relay.conftest import APP_PASSWORD, APPLE_ID, stored_events, wait_until

START = datetime(2027, 2, 1, 8, 0, tzinfo=UTC)
CRM = ("crm", "crm-secret")


class EmulatorThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = EmulatorServer(host="127.0.0.1", port=0, partition_port=0)

    def __enter__(self) -> EmulatorServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        # Slow enough that a kill lands in the middle of the burst.
        self.server.set_faults(latency_ms=150)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Calrelay:
    def __init__(self, data: Path, emulator_url: str) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.config = data.parent / "calrelay.toml"
        self.config.write_text(
            f'[storage]\ndata_dir = "{data}"\n[upstream]\ndefault_server = "{emulator_url}"\n'
            "max_concurrency = 8\nmin_backoff = 0.2\nmax_backoff = 2.0\n[auth]\nfailed_login_delay = 0.0\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(self.config), "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(self._healthy, timeout=30, message="calrelay serve is up")

    def _healthy(self) -> bool:
        try:
            return requests.get(self.url + "health", timeout=1).ok
        except requests.ConnectionError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[EmulatorServer, Calrelay]]:
    with EmulatorThread() as emulator:
        data = tmp_path / "data"
        write_users(data / "users", {"alice": ("alice-secret", False), "crm": ("crm-secret", True)})
        relay = Calrelay(data, emulator.discovery_url)
        relay.start()
        try:
            yield emulator, relay
        finally:
            relay.stop()


def test_sigkill_during_a_burst_loses_and_duplicates_nothing(setup):
    emulator, relay = setup
    assert mkcalendar(relay.url + "alice/sales/", CRM, "Sales", kind="round-robin").status_code == 201
    linked = requests.put(relay.url + "api/v1/users/alice/link", auth=CRM, timeout=30, json={
        "apple_id": APPLE_ID, "app_password": APP_PASSWORD, "primary": "work"})
    assert linked.status_code == 200, linked.text
    expected: dict[str, str] = {}
    kills: list[tuple[int, int]] = []  # (events in iCloud when killed, events the CRM had written)

    def write(number: int, summary: str) -> None:
        body = event(f"crash-{number}", START + timedelta(hours=number), summary=summary)
        assert put(relay.url + f"alice/sales/crash-{number}.ics", CRM, body).status_code in (201, 204)
        expected[f"crash-{number}"] = summary

    for phase in range(3):
        reached = len(stored_events(emulator))
        with ThreadPoolExecutor(8) as pool:
            new, changed = range(phase * 100, phase * 100 + 100), range(0, phase * 100, 7)
            list(pool.map(write, new, [f"Phase {phase}"] * len(new)))
            list(pool.map(write, changed, [f"Updated in phase {phase}"] * len(changed)))
        wait_until(lambda at_least=reached + 30: len(stored_events(emulator)) >= at_least, timeout=30,
                   message="the relay is pushing")
        relay.kill()  # mid-burst: some PUTs sent, their status not yet saved
        kills.append((len(stored_events(emulator)), (phase + 1) * 100))
        relay.start()

    def converged() -> bool:
        events = stored_events(emulator)
        return len(events) == 300 and all(f"SUMMARY:{summary}" in events[uid] for uid, summary in expected.items())

    assert any(in_icloud < written for in_icloud, written in kills), f"no kill landed mid-burst: {kills}"
    wait_until(converged, timeout=120, message="iCloud equals the CRM")
    def settled() -> bool:
        status = requests.get(relay.url + "api/v1/users/alice/status", auth=CRM, timeout=10).json()
        return status["pending"] == [] and status["state"] == "connected"

    wait_until(settled, timeout=60, message="nothing pending")
    (state,) = emulator.emulator.store.accounts.values()
    assert sorted(state.uid_index) == sorted(expected)  # one object per UID in the whole account
