"""When the database is unreachable: 503 with Retry-After at the front door, a pause in the relay.

An unreachable database (PostgreSQL stopped, restarting, its connection pool exhausted; SQLite unable to
open its file) is an outage, not a bug: CalDAV clients and the CRM get ``503 Service Unavailable`` with
``Retry-After`` and a message instead of a 500, the relay pauses with back-off, and both resume by themselves
once the database answers again: the engine's pool pings connections before use (``pool_pre_ping``) and
replaces the dead ones. Every write is one transaction, so an outage in the middle of one leaves nothing
half-written. The outage is logged once when it starts and once when it ends, not for every request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import psycopg
import sqlalchemy as sa
from aiohttp import web

logger = logging.getLogger(__name__)

#: Seconds a client is asked to wait before retrying while the database is unavailable.
RETRY_AFTER = 5
#: The relay's pause after a database failure: doubles from the first to the last, with jitter.
RELAY_MIN_PAUSE = 1.0
RELAY_MAX_PAUSE = 30.0

MESSAGE = (
    "calrelay's database is unavailable at the moment; nothing was changed. "
    f"Retry in {RETRY_AFTER} s (the server reconnects by itself)."
)


class DatabaseUnavailable(Exception):
    """The database cannot be reached at start (a command, or the server starting): the message says which."""


@contextmanager
def reachable(engine: sa.Engine) -> Iterator[None]:
    """Turn an unreachable database inside the block (opening it at start) into :class:`DatabaseUnavailable`."""
    try:
        yield
    except Exception as error:
        if not database_unavailable(error):
            raise
        engine.dispose()
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise DatabaseUnavailable(
            f"the database {engine.url.render_as_string(hide_password=True)} is unavailable ({reason}); "
            "check [storage] database and that the database server is running"
        ) from error


def database_unavailable(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) says the database cannot be reached, rather than a bug."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, sa.exc.OperationalError | sa.exc.TimeoutError | psycopg.OperationalError):
            return True
        error = error.__cause__ or error.__context__
    return False


class OutageLog:
    """Logs the start and the end of an outage once each (thread-safe: the relay and the front door share it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down_since: float | None = None

    def down(self, error: BaseException) -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        logger.warning("database unavailable, pausing until it answers again: %s", _first_line(error))

    def up(self) -> None:
        if self.down_since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self.down_since = self.down_since, None
        if since is not None:
            logger.warning("database available again after %.1f s", time.monotonic() - since)


#: The process's one outage log.
outage = OutageLog()


def _first_line(error: BaseException) -> str:
    return (str(getattr(error, "orig", None) or error).strip().splitlines() or [type(error).__name__])[0]


def unavailable_response(request: web.Request) -> web.Response:
    headers = {"Retry-After": str(RETRY_AFTER)}
    if request.path.startswith("/api/"):
        body = {"error": {"status": 503, "code": "database_unavailable", "message": MESSAGE}}
        return web.json_response(body, status=503, headers=headers)
    return web.Response(status=503, text=MESSAGE + "\n", headers=headers)


@web.middleware
async def outage_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """503 + Retry-After for any request that failed because the database is unreachable."""
    try:
        response = await handler(request)
    except Exception as error:
        if not database_unavailable(error):
            raise
        outage.down(error)
        return unavailable_response(request)
    return response
