"""The state database (SQLite): iCloud links, their calendars, and the relay's per-item status.

One file, ``<data_dir>/state.sqlite3``, in WAL mode so that the CLI (another process) and the server can use
it at the same time. Every method is blocking and short; the server calls them through :class:`AsyncState`,
which runs them one at a time on a dedicated thread, never on the event loop.

Tables:
- ``links``: one per calrelay user linked to an iCloud account (the app-specific password encrypted).
- ``link_calendars``: the linked iCloud calendars (primary / conflict), their mirror collection and pull state.
- ``items``: the relay's status, vdirsyncer-style: for each UID, the last state known to be in sync on both
  sides (local href/etag/hash, remote href/etag/hash) and where it was born.
- ``pending``: CRM changes waiting to reach iCloud, and why (the last error), so nothing is invisible.
- ``sync_requests``: immediate pulls asked for by another process (the CLI).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS links (
    user TEXT PRIMARY KEY,
    apple_id TEXT NOT NULL,
    server_url TEXT NOT NULL,
    secret BLOB NOT NULL,
    mode TEXT NOT NULL,
    deletions TEXT NOT NULL,
    calendars TEXT NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT,
    last_error_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS link_calendars (
    user TEXT NOT NULL REFERENCES links(user) ON DELETE CASCADE,
    remote_url TEXT NOT NULL,
    remote_name TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL,
    blocks INTEGER NOT NULL,
    mirror_path TEXT NOT NULL,
    ctag TEXT,
    sync_token TEXT,
    token_state TEXT NOT NULL DEFAULT 'none',
    last_success_at REAL,
    last_attempt_at REAL,
    last_error TEXT,
    PRIMARY KEY (user, remote_url)
);
CREATE TABLE IF NOT EXISTS pull_progress (
    user TEXT NOT NULL,
    remote_url TEXT NOT NULL,
    total INTEGER NOT NULL,
    fetched INTEGER NOT NULL,
    written INTEGER NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (user, remote_url)
);
CREATE TABLE IF NOT EXISTS items (
    user TEXT NOT NULL,
    calendar_url TEXT NOT NULL,
    uid TEXT NOT NULL,
    origin TEXT NOT NULL,
    local_path TEXT,
    local_href TEXT,
    local_etag TEXT,
    local_hash TEXT,
    remote_href TEXT,
    remote_etag TEXT,
    remote_hash TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (user, calendar_url, uid)
);
CREATE INDEX IF NOT EXISTS items_by_remote_href ON items (user, remote_href);
CREATE TABLE IF NOT EXISTS sync_requests (
    user TEXT PRIMARY KEY,
    requested_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    user TEXT NOT NULL,
    uid TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (user, uid)
);
"""


@dataclass(frozen=True)
class Link:
    user: str
    apple_id: str
    server_url: str
    secret: bytes  # Fernet token of the app-specific password; see proxy.secretbox
    mode: str  # "two-way" | "one-way"
    deletions: str  # "keep" | "propagate"
    calendars: str  # comma-separated booking calendar paths to integrate; "" = all of the integrating kinds
    state: str  # "connected" | "needs-reconnect" | "error"
    last_error: str | None
    last_error_at: float | None
    created_at: float
    updated_at: float

    @property
    def booking_calendars(self) -> frozenset[str]:
        return frozenset(path for path in self.calendars.split(",") if path)


@dataclass(frozen=True)
class LinkCalendar:
    user: str
    remote_url: str
    remote_name: str
    display_name: str
    role: str  # MirrorRole value
    blocks: bool  # whether its events block availability
    mirror_path: str
    ctag: str | None = None
    sync_token: str | None = None
    token_state: str = "none"  # none | valid | refused (fell back to listing)
    last_success_at: float | None = None
    last_attempt_at: float | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class ItemStatus:
    """The last state of one UID known to be the same on both sides."""

    user: str
    calendar_url: str  # the iCloud calendar
    uid: str
    origin: str  # Origin value
    local_path: str | None  # the calrelay collection holding it (booking calendar or mirror)
    local_href: str | None
    local_etag: str | None
    local_hash: str | None
    remote_href: str | None  # None once it was deleted in iCloud (and kept locally)
    remote_etag: str | None
    remote_hash: str | None
    updated_at: float = 0.0


@dataclass(frozen=True)
class Pending:
    user: str
    uid: str
    action: str
    reason: str
    attempts: int
    first_at: float
    last_at: float


def _columns(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _row(cls: type[T], row: sqlite3.Row) -> T:
    values = dict(row)
    if cls is LinkCalendar:
        values["blocks"] = bool(values["blocks"])
    return cls(**values)


class StateDB:
    """Blocking access to the state database. One instance per thread (see AsyncState)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as db:
            for statement in _statements(SCHEMA):
                db.execute(statement)
        path.chmod(0o600)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def data_version(self) -> int:
        """Changes whenever another connection (e.g. the CLI) commits: a cheap way to notice new links."""
        return self._db.execute("PRAGMA data_version").fetchone()[0]

    # -- links ------------------------------------------------------------------------------------------

    def save_link(self, link: Link, calendars: list[LinkCalendar]) -> None:
        """Create or replace a link and its calendars. Keeps pull state of calendars that stay linked."""
        with self.transaction() as db:
            previous = {c.remote_url: c for c in self.link_calendars(link.user)}
            db.execute("DELETE FROM link_calendars WHERE user = ?", (link.user,))
            db.execute(
                f"INSERT OR REPLACE INTO links ({', '.join(_columns(Link))}) "
                f"VALUES ({', '.join('?' * len(_columns(Link)))})",
                [getattr(link, c) for c in _columns(Link)],
            )
            linked = [calendar.remote_url for calendar in calendars]
            # Forget the status of calendars no longer linked: their mirrors are gone.
            db.execute(
                f"DELETE FROM items WHERE user = ? AND calendar_url NOT IN ({', '.join('?' * len(linked))})",
                [link.user, *linked],
            )
            for calendar in calendars:
                kept = previous.get(calendar.remote_url)
                if kept is not None and kept.mirror_path == calendar.mirror_path:
                    calendar = LinkCalendar(
                        **{**calendar.__dict__, **{k: getattr(kept, k) for k in _PULL_STATE}}
                    )
                self._insert_calendar(db, calendar)

    def _insert_calendar(self, db: sqlite3.Connection, calendar: LinkCalendar) -> None:
        names = _columns(LinkCalendar)
        db.execute(
            f"INSERT OR REPLACE INTO link_calendars ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            [getattr(calendar, c) for c in names],
        )

    def link(self, user: str) -> Link | None:
        row = self._db.execute("SELECT * FROM links WHERE user = ?", (user,)).fetchone()
        return _row(Link, row) if row else None

    def links(self) -> list[Link]:
        return [_row(Link, r) for r in self._db.execute("SELECT * FROM links ORDER BY user")]

    def delete_link(self, user: str) -> bool:
        with self.transaction() as db:
            deleted = db.execute("DELETE FROM links WHERE user = ?", (user,)).rowcount
            db.execute("DELETE FROM link_calendars WHERE user = ?", (user,))
            db.execute("DELETE FROM items WHERE user = ?", (user,))
            db.execute("DELETE FROM pending WHERE user = ?", (user,))
        return bool(deleted)

    def set_link_state(self, user: str, state: str, error: str | None = None) -> None:
        now = time.time()
        with self.transaction() as db:
            if error is None:
                db.execute("UPDATE links SET state = ?, updated_at = ? WHERE user = ?", (state, now, user))
            else:
                db.execute(
                    "UPDATE links SET state = ?, last_error = ?, last_error_at = ?, updated_at = ? WHERE user = ?",
                    (state, error, now, now, user),
                )

    def link_calendars(self, user: str) -> list[LinkCalendar]:
        rows = self._db.execute(
            "SELECT * FROM link_calendars WHERE user = ? ORDER BY role DESC, remote_name", (user,)
        )
        return [_row(LinkCalendar, r) for r in rows]

    def update_pull_state(self, user: str, remote_url: str, **values: Any) -> None:
        unknown = set(values) - set(_PULL_STATE)
        if unknown:
            raise ValueError(f"not pull state: {sorted(unknown)}")
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self.transaction() as db:
            db.execute(
                f"UPDATE link_calendars SET {assignments} WHERE user = ? AND remote_url = ?",
                [*values.values(), user, remote_url],
            )

    # -- item status ------------------------------------------------------------------------------------

    def items(self, user: str, calendar_url: str | None = None) -> list[ItemStatus]:
        if calendar_url is None:
            rows = self._db.execute("SELECT * FROM items WHERE user = ?", (user,))
        else:
            rows = self._db.execute("SELECT * FROM items WHERE user = ? AND calendar_url = ?", (user, calendar_url))
        return [_row(ItemStatus, r) for r in rows]

    def save_item(self, item: ItemStatus) -> None:
        names = _columns(ItemStatus)
        values = [time.time() if c == "updated_at" else getattr(item, c) for c in names]
        with self.transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO items ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", values
            )

    def delete_item(self, user: str, calendar_url: str, uid: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM items WHERE user = ? AND calendar_url = ? AND uid = ?", (user, calendar_url, uid))

    # -- pending work -----------------------------------------------------------------------------------

    def set_pending(self, user: str, uid: str, action: str, reason: str) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO pending (user, uid, action, reason, attempts, first_at, last_at) "
                "VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (user, uid) DO UPDATE SET "
                "action = excluded.action, reason = excluded.reason, attempts = attempts + 1, "
                "last_at = excluded.last_at",
                (user, uid, action, reason, now, now),
            )

    def replace_pending(self, user: str, entries: list[tuple[str, str, str]]) -> None:
        """Make the pending list exactly ``entries`` (uid, action, reason), keeping the history of UIDs that
        were already pending. Called with a fresh plan, so work that is no longer needed disappears."""
        now = time.time()
        with self.transaction() as db:
            known = {row["uid"]: row for row in db.execute("SELECT * FROM pending WHERE user = ?", (user,))}
            wanted = {uid for uid, _, _ in entries}
            db.executemany("DELETE FROM pending WHERE user = ? AND uid = ?",
                           [(user, uid) for uid in known if uid not in wanted])
            db.executemany(
                "INSERT OR REPLACE INTO pending (user, uid, action, reason, attempts, first_at, last_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (user, uid, action, known[uid]["reason"] if uid in known and known[uid]["action"] == action
                     else reason, known[uid]["attempts"] if uid in known else 0,
                     known[uid]["first_at"] if uid in known else now, now)
                    for uid, action, reason in entries
                ],
            )

    def clear_pending(self, user: str, uid: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM pending WHERE user = ? AND uid = ?", (user, uid))

    def request_sync(self, user: str) -> None:
        """Ask the running server for an immediate pull (``calrelay sync USER --now`` from another process)."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO sync_requests (user, requested_at) VALUES (?, ?)", (user, time.time()))

    def take_sync_requests(self) -> list[str]:
        with self.transaction() as db:
            users = [row["user"] for row in db.execute("SELECT user FROM sync_requests")]
            db.execute("DELETE FROM sync_requests")
        return users

    def pending(self, user: str) -> list[Pending]:
        rows = self._db.execute("SELECT * FROM pending WHERE user = ? ORDER BY first_at, uid", (user,))
        return [_row(Pending, r) for r in rows]

    # -- running pulls (progress of an import, for `calrelay status` and the API) -------------------------

    def set_progress(self, user: str, remote_url: str, total: int, fetched: int, written: int,
                     started_at: float) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO pull_progress VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user, remote_url, total, fetched, written, started_at, time.time()),
            )

    def clear_progress(self, user: str, remote_url: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM pull_progress WHERE user = ? AND remote_url = ?", (user, remote_url))

    def progress(self, user: str) -> dict[str, dict[str, float]]:
        """remote URL -> the running pull's total, fetched, written, started_at, updated_at."""
        rows = self._db.execute("SELECT * FROM pull_progress WHERE user = ?", (user,))
        return {r["remote_url"]: {k: r[k] for k in ("total", "fetched", "written", "started_at", "updated_at")}
                for r in rows}


_PULL_STATE = ("ctag", "sync_token", "token_state", "last_success_at", "last_attempt_at", "last_error")


def _statements(script: str) -> list[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]


class AsyncState:
    """The state database for the event loop: every call runs on one dedicated thread, in order."""

    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="state-db")
        self.db = self._executor.submit(StateDB, path).result()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._executor.submit(self.db.close).result()
        self._executor.shutdown(wait=True)
