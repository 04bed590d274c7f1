"""The connection every storage call of one request shares, and small helpers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import sqlalchemy as sa
from radicale import pathutils

from proxy import database

#: The transaction of the current ``acquire_lock`` block (a request, or one of the engine's direct calls).
_connection: ContextVar[tuple[sa.Connection, bool] | None] = ContextVar("calrelay_sql_connection", default=None)


def http_date(epoch: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(epoch))


def safe_path(path: str) -> str | None:
    """``path`` sanitized (no slashes around), or None when a component is unsafe."""
    sane = pathutils.strip_path(path)
    if sane and not all(pathutils.is_safe_filesystem_path_component(part) for part in sane.split("/")):
        return None
    return sane


class ConnectionMixin:
    """Runs each storage operation in the transaction of the enclosing lock, or in one of its own."""

    engine: sa.Engine

    @contextmanager
    def transaction(self, mode: str) -> Iterator[sa.Connection]:
        """The current transaction (if any, whatever its mode), else a new one for ``mode`` "r" or "w"."""
        current = _connection.get()
        if current is not None:
            yield current[0]
            return
        with (database.writing if mode == "w" else database.reading)(self.engine) as connection:
            token = _connection.set((connection, mode == "w"))
            try:
                yield connection
            finally:
                _connection.reset(token)

    @staticmethod
    def in_write_transaction() -> bool:
        current = _connection.get()
        return current is not None and current[1]
