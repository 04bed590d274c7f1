"""Shared fixtures: a real calrelay server on an ephemeral loopback port, with users.

The server runs in a background thread with its own event loop, so tests can use the synchronous
python-caldav client directly, exactly as a CRM or harness would, over real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import bcrypt
import caldav
import pytest
from aiohttp import web

from proxy import config, database
from proxy.app import make_app
from proxy.auth import UserRecord, UsersFile

T = TypeVar("T")

#: name -> (password, is_service). Hashes use few bcrypt rounds to keep the suite fast.
DEFAULT_USERS: dict[str, tuple[str, bool]] = {
    "alice": ("alice-secret", False),
    "bob": ("bob-secret", False),
    "crm": ("crm-secret", True),
}


@pytest.fixture(autouse=True, scope="module")
def _own_test_database() -> Iterator[None]:
    """With ``CALRELAY_TEST_DATABASE`` set to a PostgreSQL server, the suite runs on PostgreSQL: every data
    directory gets a database of its own there (``proxy.database.default_url``), dropped after the test
    module (not after each test: a module's server may outlive one test)."""
    yield
    server = os.environ.get(database.TEST_DATABASE_ENV, "")
    if server and not database.is_sqlite(server):
        database.drop_test_databases(server)


def write_users(path: Path, users: dict[str, tuple[str, bool]]) -> None:
    records = {
        name: UserRecord(name, bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)), is_service)
        for name, (password, is_service) in users.items()
    }
    UsersFile(path).write(records)


class ServerThread:
    """Runs an aiohttp application on 127.0.0.1 with an ephemeral port in a background thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self._runner = web.AppRunner(app)
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        """Shut the application down (cleanup contexts run) and end the thread; safe to call twice."""
        if self.loop.is_closed():
            return
        self.run(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Calrelay:
    """A running calrelay: its URL, settings and users, and helpers to talk to it."""

    server: ServerThread
    settings: config.Settings
    users: dict[str, tuple[str, bool]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/"

    @property
    def app(self) -> web.Application:
        return self.server.app

    @property
    def data_dir(self) -> Path:
        return self.settings.storage.data_dir

    def password(self, user: str) -> str:
        return self.users[user][0]

    def client(self, user: str, password: str | None = None) -> caldav.DAVClient:
        return caldav.DAVClient(url=self.url, username=user, password=password or self.password(user))

    def auth(self, user: str) -> tuple[str, str]:
        return user, self.password(user)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return self.server.run(coroutine, timeout)


@contextlib.contextmanager
def running_calrelay(
    data_dir: Path,
    users: dict[str, tuple[str, bool]] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    customize: Callable[[web.Application], None] | None = None,
) -> Iterator[Calrelay]:
    """Start calrelay on a fresh port with ``users``; ``customize`` may change the app before start."""
    users = DEFAULT_USERS if users is None else users
    sections = {key: dict(value) for key, value in (overrides or {}).items()}
    sections.setdefault("storage", {})["data_dir"] = str(data_dir)
    sections.setdefault("auth", {}).setdefault("failed_login_delay", 0.0)
    # The embedded emulator (the default upstream) on ephemeral ports, so tests never collide.
    sections.setdefault("emulator", {}).setdefault("port", 0)
    sections["emulator"].setdefault("partition_port", 0)
    settings = config.load(None, sections)
    write_users(settings.users_file, users)
    app = make_app(settings)
    if customize is not None:
        customize(app)
    server = ServerThread(app)
    server.start()
    try:
        yield Calrelay(server, settings, dict(users))
    finally:
        server.stop()


@pytest.fixture
def calrelay(tmp_path: Path) -> Iterator[Calrelay]:
    """calrelay with users alice and bob and the service account crm (see DEFAULT_USERS)."""
    with running_calrelay(tmp_path / "data") as server:
        yield server


@pytest.fixture
def calrelay_factory(tmp_path: Path) -> Iterator[Callable[..., Calrelay]]:
    """Start more calrelay servers: ``calrelay_factory(users=..., overrides=..., customize=...)``."""
    with contextlib.ExitStack() as stack:
        counter = iter(range(1000))

        def start(**kwargs: Any) -> Calrelay:
            data_dir = kwargs.pop("data_dir", None) or tmp_path / f"data-{next(counter)}"
            return stack.enter_context(running_calrelay(data_dir, **kwargs))

        yield start
