"""Fixtures for the relay: calrelay with its built-in iCloud emulator, alice linked, booking calendars made."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from proxy.emulator import EmulatorServer
from proxy.keys import EMULATOR, RELAY
from proxy.relay.transforms import object_uid
from proxy.upstream import Throttled, TransientError, UpstreamClient
from tests.conftest import Calrelay
from tests.helpers import mkcalendar

APPLE_ID = "demo@icloud.test"
APP_PASSWORD = "abcd-efgh-ijkl-mnop"


def wait_until(condition: Callable[[], Any], timeout: float = 20, message: str = "", interval: float = 0.05) -> Any:
    """Poll ``condition`` every ``interval`` seconds until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting: {message or condition}")
        time.sleep(interval)


def stored_events(emulator: EmulatorServer, calendar: str = "work") -> dict[str, str]:
    """UID -> text in a calendar of the emulator's (only) account, straight from its store: an inspection
    that the faults a test switched on cannot disturb."""
    (state,) = emulator.emulator.store.accounts.values()
    return {obj.uid: obj.body for obj in list(state.collections[calendar].objects.values())}


@dataclass
class Linked:
    """calrelay with alice linked to the emulator's demo account (primary work, conflict home)."""

    relay: Calrelay

    @property
    def emulator(self) -> EmulatorServer:
        return self.relay.app[EMULATOR]

    @property
    def url(self) -> str:
        return self.relay.url

    def icloud(self, calendar: str = "work") -> dict[str, str]:
        """UID -> text of the events in an iCloud calendar of the demo account, read over CalDAV (retrying
        through the faults a test may have switched on)."""

        async def read() -> dict[str, str]:
            async with UpstreamClient(self.emulator.discovery_url, APPLE_ID, APP_PASSWORD) as client:
                account = await client.discover()
                url = next(c.url for c in account.calendars if c.name == calendar)
                listing = await client.listing(url)
                objects = await client.fetch(url, listing)
                if len(objects) < len(listing):
                    raise TransientError("incomplete read")
            return {object_uid(o.text): o.text for o in objects.values()}

        for attempt in range(50):
            try:
                return self.relay.run(read())
            except (TransientError, Throttled):
                time.sleep(0.1 * min(attempt + 1, 10))
        raise AssertionError("iCloud (the emulator) could not be read")

    def icloud_store(self, calendar: str = "work") -> dict[str, str]:
        return stored_events(self.emulator, calendar)

    def icloud_client(self) -> UpstreamClient:
        return UpstreamClient(self.emulator.discovery_url, APPLE_ID, APP_PASSWORD)

    def sync_now(self, user: str = "alice") -> None:
        async def trigger() -> None:
            assert self.relay.app[RELAY].sync_now(user)

        self.relay.run(trigger())

    def passes(self, count: int, user: str = "alice", timeout: float = 30) -> None:
        """Run ``count`` more pull passes now (each asked for, not waited for at the poll interval)."""
        target = self.worker(user).passes + count

        def done() -> bool:
            worker = self.worker(user)
            if worker is None or worker.passes >= target:
                return worker is not None
            self.sync_now(user)  # asked during a pass, the next one starts when it ends
            return False

        wait_until(done, timeout=timeout, message=f"{count} more pull passes")

    def status(self, user: str = "alice") -> dict[str, Any]:
        response = requests.get(self.url + f"api/v1/users/{user}/status", auth=self.relay.auth("crm"), timeout=10)
        response.raise_for_status()
        return response.json()

    def worker(self, user: str = "alice"):
        return self.relay.app[RELAY].worker(user)


def link(relay: Calrelay, user: str = "alice", **body: Any) -> dict[str, Any]:
    payload = {"apple_id": APPLE_ID, "app_password": APP_PASSWORD, "primary": "work", "conflicts": ["home"], **body}
    response = requests.put(relay.url + f"api/v1/users/{user}/link", json=payload, auth=relay.auth("crm"), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def make_linked(relay: Calrelay, **body: Any) -> Linked:
    crm = relay.auth("crm")
    assert mkcalendar(relay.url + "alice/sales/", crm, "Sales", kind="round-robin").status_code == 201
    assert mkcalendar(relay.url + "alice/intro/", crm, "Intro calls", kind="simple").status_code == 201
    link(relay, **body)
    linked = Linked(relay)
    wait_until(lambda: linked.worker() is not None and linked.worker().passes > 0, message="first relay pass")
    return linked


@pytest.fixture
def linked(calrelay_factory) -> Linked:
    return make_linked(calrelay_factory(overrides={"upstream": {"poll_interval": 1.0, "min_backoff": 0.2,
                                                                "max_backoff": 2.0}}))
