"""The one SQL database every part of calrelay shares: engine creation for SQLite and PostgreSQL.

calrelay keeps calendars, relay state, users and the audit trail in one database behind SQLAlchemy Core:
SQLite on one machine (the embedded default, ``<data_dir>/calrelay.db``), PostgreSQL (``postgresql+psycopg://``,
psycopg 3, a connection pool) for several instances. Every subsystem declares its tables on :data:`metadata`
(one :class:`sqlalchemy.MetaData`), so that one schema version covers them all.

SQLite is opened in WAL mode, so readers never wait for the writer, with a busy timeout so that concurrent
writers (the CLI beside the server) queue instead of failing, and with foreign keys on. The database file and
its ``-wal``/``-shm`` companions are private to the user (mode 0600): they hold calendar data and secrets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

logger = logging.getLogger(__name__)

#: Every table of calrelay is declared on this one metadata.
metadata = sa.MetaData()

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "calrelay_write"


#: For the test suite on PostgreSQL: the URL of a server on which every data directory gets its own database.
TEST_DATABASE_ENV = "CALRELAY_TEST_DATABASE"
TEST_DATABASE_PREFIX = "calrelay_test_"


def default_url(data_dir: Path) -> str:
    """The embedded default: a SQLite file in the data directory.

    When ``CALRELAY_TEST_DATABASE`` names a PostgreSQL server (the test suite's second backend), the
    default is instead a database of its own for this data directory on that server, created on first use,
    so that every test, and every process a test starts on the same directory, shares one fresh database.
    """
    server = os.environ.get(TEST_DATABASE_ENV, "")
    if server and not is_sqlite(server):
        return _test_database(server, data_dir)
    return f"sqlite:///{(data_dir / 'calrelay.db').resolve()}"


def _test_database(server: str, data_dir: Path) -> str:
    import hashlib

    import psycopg

    name = TEST_DATABASE_PREFIX + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:24]
    url = make_url(server).set(drivername="postgresql+psycopg")
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            with suppress(psycopg.errors.DuplicateDatabase):  # another process of the same test won
                connection.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def drop_test_databases(server: str) -> None:
    """Drop every database :func:`default_url` made on ``server`` (after each test)."""
    import psycopg

    admin = make_url(server).set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        names = [row[0] for row in connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (TEST_DATABASE_PREFIX + "%",))]
        for name in names:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def redacted(url: str | URL) -> str:
    """The URL without its password, for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def create_engine(url: str | URL, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """An engine for ``url``, tuned per backend (see the module docstring)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo)
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
            echo=echo,
        )
    raise ValueError(
        f"unsupported database {redacted(parsed)!r}: use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
    )


@contextmanager
def writing(engine: Engine) -> Iterator[sa.Connection]:
    """A transaction that will write: committed on success, rolled back on error.

    On SQLite it takes the write lock up front (see ``_on_begin``); on PostgreSQL it is a plain transaction
    (row locks and constraints serialise what must be).
    """
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        yield connection


@contextmanager
def reading(engine: Engine) -> Iterator[sa.Connection]:
    """A read-only transaction (a consistent snapshot on both backends)."""
    with engine.connect() as connection, connection.begin():
        yield connection


def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
    database = url.database
    if database and database != ":memory:":
        path = Path(database)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _touch_private(path)
    engine = sa.create_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (pysqlite's implicit BEGIN would
        # otherwise defer the write lock and turn concurrent writers into "database is locked" errors).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()
        if database and database != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                _make_private(Path(database + suffix))

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # A writing transaction takes the write lock at BEGIN (IMMEDIATE): a read-then-write transaction can
        # then never fail with SQLITE_BUSY half-way, as a deferred one upgrading its lock late would. Readers
        # stay deferred, so in WAL mode they never wait for a writer.
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _touch_private(path: Path) -> None:
    """Create a missing database file private from the start.

    An existing file is never opened here: closing any descriptor of a SQLite file drops every POSIX lock
    this process holds on it, including those of its open connections, and the database can be corrupted
    (https://www.sqlite.org/howtocorrupt.html, section 2.2).
    """
    if path.exists():
        _make_private(path)
        return
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    _make_private(path)


def _make_private(path: Path) -> None:
    with suppress(FileNotFoundError):
        os.chmod(path, 0o600)
