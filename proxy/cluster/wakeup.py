"""Cross-instance wake-up: a CRM write on one instance wakes the relay of the instance holding the link.

On PostgreSQL each instance keeps one dedicated connection (psycopg 3, async, autocommit) that has run
``LISTEN calrelay_wakeup``; :func:`publish` sends ``pg_notify('calrelay_wakeup', link_key)`` and PostgreSQL
delivers it to every listening instance, typically within milliseconds. The instance that holds the link's lease
acts on it; the others ignore it.

Notifications are a hint, not the record: they are lost while a listener is disconnected, and
:func:`publish` runs after the write has committed, so a crash in between loses one. Hence the fallback: the
listener also yields a *rescan* (``Wake(None)``) every ``poll_interval`` seconds, and right after every
(re)connection, upon which the relay looks at all its links, as it would without any wake-up.

On SQLite (one machine, usually one server process) notifications travel in-process, between the engines of
the same database file; another process (the CLI beside the server) is covered by the periodic rescan.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

logger = logging.getLogger(__name__)

CHANNEL = "calrelay_wakeup"
DEFAULT_POLL_SECONDS = 30.0
_RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True)
class Wake:
    """A reason to look at links now: one link (``link_key``), or all of them (None: a rescan)."""

    link_key: str | None


def publish(engine: Engine, link_keys: Iterable[str]) -> None:
    """Wake whichever instance relays ``link_keys``. Call after the write that concerns them has committed."""
    keys = list(dict.fromkeys(link_keys))
    if not keys:
        return
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            for key in keys:
                connection.execute(sa.select(sa.func.pg_notify(CHANNEL, key)))
    else:
        _local.deliver(_database_key(engine.url), keys)


def _database_key(url: URL) -> str:
    return url.render_as_string(hide_password=True)


class _LocalHub:
    """In-process delivery for SQLite: queues of the listeners of each database, fed from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Wake]]]] = {}

    def add(self, database: str, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Wake]) -> None:
        with self._lock:
            self._queues.setdefault(database, []).append((loop, queue))

    def remove(self, database: str, queue: asyncio.Queue[Wake]) -> None:
        with self._lock:
            self._queues[database] = [(lp, q) for lp, q in self._queues.get(database, []) if q is not queue]

    def deliver(self, database: str, keys: list[str]) -> None:
        with self._lock:
            targets = list(self._queues.get(database, []))
        for loop, queue in targets:
            for key in keys:
                with suppress(RuntimeError):  # that listener's loop has closed
                    loop.call_soon_threadsafe(queue.put_nowait, Wake(key))


_local = _LocalHub()


@asynccontextmanager
async def listen(url: str | URL, *, poll_interval: float = DEFAULT_POLL_SECONDS) -> AsyncIterator[AsyncIterator[Wake]]:
    """Wakes for the database at ``url``: ``async with listen(url) as wakes: async for wake in wakes: ...``.

    The first wake is always a rescan, so that whatever happened before listening began is looked at; it comes
    once the listener is established (on PostgreSQL, once ``LISTEN`` has run), so every later notification is
    delivered. After a lost connection, the reconnection yields a rescan again.
    """
    parsed = make_url(url)
    queue: asyncio.Queue[Wake] = asyncio.Queue()
    if parsed.get_backend_name() == "postgresql":
        task = asyncio.create_task(_listen_postgresql(parsed, queue, poll_interval), name="calrelay-wakeup")
        try:
            yield _drain(queue)
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        return
    database = _database_key(parsed)
    _local.add(database, asyncio.get_running_loop(), queue)
    queue.put_nowait(Wake(None))
    task = asyncio.create_task(_poll(queue, poll_interval), name="calrelay-wakeup-poll")
    try:
        yield _drain(queue)
    finally:
        _local.remove(database, queue)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def _drain(queue: asyncio.Queue[Wake]) -> AsyncIterator[Wake]:
    while True:
        yield await queue.get()


async def _poll(queue: asyncio.Queue[Wake], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        queue.put_nowait(Wake(None))


def _conninfo(url: URL) -> str:
    # libpq takes a postgresql:// URI; SQLAlchemy's driver suffix (+psycopg) is not part of it.
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _listen_postgresql(url: URL, queue: asyncio.Queue[Wake], poll_interval: float) -> None:
    conninfo = _conninfo(url)
    failures = 0
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
                await connection.execute(f"LISTEN {CHANNEL}")
                if failures:
                    logger.info("wake-up listener reconnected to %s", url.render_as_string(hide_password=True))
                failures = 0
                # Established (again): rescan, since notifications sent while not listening are lost.
                queue.put_nowait(Wake(None))
                while True:
                    async for notify in connection.notifies(timeout=poll_interval):
                        queue.put_nowait(Wake(notify.payload))
                    queue.put_nowait(Wake(None))
        except psycopg.OperationalError as error:
            delay = _RECONNECT_SECONDS[min(failures, len(_RECONNECT_SECONDS) - 1)]
            failures += 1
            logger.warning("wake-up listener lost the database (%s); retrying in %.1f s", error, delay)
            await asyncio.sleep(delay)
