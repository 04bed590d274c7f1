"""Real ``calrelay serve`` processes sharing one PostgreSQL database, for the multi-instance tests and the bench.

Each instance has its own data directory and port; all of them point ``[storage] database`` at the same
database (calendars, relay state, leases) and ``[upstream]`` at one iCloud emulator running in the test's own
process, as iCloud would, outside calrelay. The key that encrypts app-specific passwords is the same for all
(``CALRELAY_SECRET_KEY``), so a link made through one instance is relayed by any. Each instance connects with
its own ``application_name``, so the database can tell who wrote what.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from proxy.emulator import EmulatorServer
from proxy.emulator.accounts import Account, default_accounts
from tests.conftest import write_users
from tests.helpers import free_port
from tests.relay.conftest import wait_until

CRM = ("crm", "crm-secret")
USERS = ({name: (f"{name}-secret", False) for name in ("alice", "bob", "carol", "dave")}
         | {f"user{n}": (f"user{n}-secret", False) for n in range(12)} | {"crm": ("crm-secret", True)})
APPLE_ID = "demo@icloud.test"
APP_PASSWORD = "abcd-efgh-ijkl-mnop"


class EmulatorThread:
    """The iCloud emulator on loopback, in a thread of this process (it outlives every calrelay instance)."""

    def __init__(self, latency_ms: int = 0, accounts: list[Account] | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = EmulatorServer(host="127.0.0.1", port=0, partition_port=0, accounts=accounts)
        self.latency_ms = latency_ms

    def __enter__(self) -> EmulatorThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        if self.latency_ms:
            self.server.set_faults(latency_ms=self.latency_ms)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return self.server.discovery_url

    def uids(self, calendar: str = "work") -> Counter[str]:
        """How many objects carry each UID in the calendar of every account (a duplicate counts twice)."""
        return Counter(obj.uid for state in list(self.server.emulator.store.accounts.values())
                       for obj in list(state.collections[calendar].objects.values()))

    def bodies(self, calendar: str = "work") -> dict[str, str]:
        (state,) = self.server.emulator.store.accounts.values()
        return {obj.uid: obj.body for obj in list(state.collections[calendar].objects.values())}


class Instance:
    """One ``calrelay serve`` process."""

    def __init__(self, root: Path, name: str, database: str, lease: float, key: str,
                 extra_config: str = "") -> None:
        self.name = name
        self.data = root / name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = root / f"{name}.log"
        write_users(self.data / "users", USERS)
        separator = "&" if "?" in database else "?"
        self.config = root / f"{name}.toml"
        self.config.write_text(
            f'[storage]\ndata_dir = "{self.data}"\ndatabase = "{database}{separator}application_name={name}"\n'
            # No embedded emulator: every link names the test's emulator as its server.
            '[upstream]\ndefault_server = "https://caldav.icloud.com/"\n'
            "max_concurrency = 8\nmin_backoff = 0.2\nmax_backoff = 2.0\n"
            "account_rate = 1000.0\naccount_burst = 1000\n"
            f"[auth]\nfailed_login_delay = 0.0\n[cluster]\nlease = {lease}\n{extra_config}"
        )
        self.key = key
        self.process: subprocess.Popen[bytes] | None = None
        self.instance_id: str | None = None

    def start(self, wait: bool = True) -> Instance:
        environment = {**os.environ, "CALRELAY_SECRET_KEY": self.key}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "--config", str(self.config), "--port", str(self.port)],
                stdout=log, stderr=log, env=environment,
            )
        self.instance_id = None
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self) -> None:
        health = wait_until(self.health, 60, f"{self.name} answers /health")
        self.instance_id = health["instance"]

    def health(self) -> dict[str, Any] | None:
        try:
            response = requests.get(self.url + "health", timeout=2)
        except requests.RequestException:
            return None
        return response.json() if response.ok else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, number: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, number)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), as systemd does it."""
        if self.alive:
            assert self.process is not None
            self.signal(signal.SIGCONT)  # in case a test left it stopped
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class Cluster:
    def __init__(self, root: Path, database: str, count: int, lease: float, key: str) -> None:
        self.database = database
        self.lease_seconds = lease
        self.instances = [Instance(root, f"calrelay-{n}", database, lease, key) for n in range(count)]
        self.engine = sa.create_engine(database, isolation_level="AUTOCOMMIT")

    def start(self) -> Cluster:
        for number, instance in enumerate(self.instances):
            instance.start(wait=number == 0)  # the first creates the schema; the rest start side by side
        for instance in self.instances:
            instance.wait_healthy()
        return self

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()
        self.engine.dispose()

    def live(self) -> list[Instance]:
        return [instance for instance in self.instances if instance.alive]

    def lease(self, user: str) -> tuple[str | None, int, float]:
        """(live holder's instance id, token, acquired_at) of ``user``'s link, from the database."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.text(
                "SELECT holder, token, acquired_at, expires_at FROM cluster_leases WHERE link_key = :user"
            ), {"user": user}).first()
        if row is None:
            return None, 0, 0.0
        live = row.holder if row.holder is not None and row.expires_at > time.time() else None
        return live, row.token, row.acquired_at

    def holder(self, user: str) -> Instance | None:
        holder, _, _ = self.lease(user)
        if holder is None:
            return None
        for instance in self.instances:
            if instance.alive and instance.instance_id != holder and (health := instance.health()):
                instance.instance_id = health["instance"]  # restarted: a new process is a new instance
        return next((i for i in self.instances if i.alive and i.instance_id == holder), None)

    def wait_holder(self, user: str, timeout: float, other_than: Iterable[Instance] = ()) -> Instance:
        excluded = {id(instance) for instance in other_than}
        return wait_until(lambda: (h := self.holder(user)) is not None and id(h) not in excluded and h,
                        timeout, f"a live instance holds {user}'s link")


def accounts(count: int) -> list[Account]:
    """``count`` emulator accounts like the built-in one: ``demo0@icloud.test``, ``demo1@icloud.test``, ..."""
    (demo,) = default_accounts()
    return [dataclasses.replace(demo, apple_id=f"demo{n}@icloud.test", dsid=str(1234567890 + n)) for n in range(count)]


def link(instance: Instance, user: str, emulator: EmulatorThread, apple_id: str = APPLE_ID) -> None:
    """A round-robin booking calendar for ``user`` and its link to the emulator, made through ``instance``."""
    from tests.helpers import mkcalendar

    assert mkcalendar(instance.url + f"{user}/sales/", CRM, "Sales", kind="round-robin").status_code == 201
    response = requests.put(instance.url + f"api/v1/users/{user}/link", auth=CRM, timeout=60, json={
        "apple_id": apple_id, "app_password": APP_PASSWORD, "primary": "work", "server": emulator.url})
    assert response.status_code == 200, response.text
