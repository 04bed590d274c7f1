"""Which errors count as a database outage (pure)."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
import sqlalchemy as sa

from proxy.outage import database_unavailable


def _wrapped(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as error:
            raise outer from error
    except Exception as error:
        return error


@pytest.mark.parametrize("error", [
    sa.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused")),
    sa.exc.DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True),
    sa.exc.TimeoutError("QueuePool limit reached"),
    psycopg.OperationalError("connection refused"),
    _wrapped(RuntimeError("storage failed"), psycopg.OperationalError("terminating connection")),
])
def test_outages(error):
    assert database_unavailable(error)


@pytest.mark.parametrize("error", [
    None,
    ValueError("bad event"),
    sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
    sa.exc.DBAPIError("SELECT 1", {}, Exception("syntax error"), connection_invalidated=False),
    _wrapped(RuntimeError("bug"), KeyError("x")),
])
def test_not_outages(error):
    assert not database_unavailable(error)
