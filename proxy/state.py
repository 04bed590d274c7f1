"""The relay's state, in calrelay's SQL database: iCloud links, their calendars, and the per-item status.

The tables live beside the calendars in the one database (``Settings.database_url``: SQLite in the data
directory by default, PostgreSQL for several instances), declared on :data:`proxy.database.metadata` with the
prefix ``relay_``. The CLI (another process) and the server use them at the same time: SQLite in WAL mode and
PostgreSQL both serialise the writers. Every method is blocking and short; the server calls them through
:class:`AsyncState`, which runs them on a small thread pool, never on the event loop.

Tables:
- ``relay_links``: one per calrelay user linked to an iCloud account (the app-specific password encrypted).
- ``relay_link_calendars``: the linked iCloud calendars (primary / conflict), their mirror collection and pull
  state.
- ``relay_items``: the relay's status, vdirsyncer-style: for each UID, the last state known to be in sync on
  both sides (local href/etag/hash, remote href/etag/hash) and where it was born.
- ``relay_pending``: CRM changes waiting to reach iCloud, and why (the last error), so nothing is invisible.
- ``relay_sync_requests``: immediate pulls asked for by another process (the CLI).
- ``relay_generation``: one counter, bumped by every change of the set of links, so that a server notices
  what another process (or instance) changed by reading one row.
- ``relay_outbox`` (see :mod:`proxy.relay.outbox`): CRM writes whose relay work is not done yet.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from proxy.cluster.budget import apple_id_budgets
from proxy.cluster.leases import LeaseRow, cluster_leases, fenced, instances
from proxy.database import create_engine, metadata, reading, writing
from proxy.outage import database_unavailable, outage, reachable
from proxy.relay import outbox
from proxy.relay.outbox import outbox_table

T = TypeVar("T")

#: Worker threads of :class:`AsyncState`: the database serialises the writes, readers run side by side.
STATE_THREADS = 4

links_table = sa.Table(
    "relay_links", metadata,
    sa.Column("user", sa.Text, primary_key=True),
    sa.Column("apple_id", sa.Text, nullable=False),
    sa.Column("server_url", sa.Text, nullable=False),
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("deletions", sa.Text, nullable=False),
    sa.Column("calendars", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("last_error_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("policies", sa.Text, nullable=False, server_default="{}"),
)
link_calendars_table = sa.Table(
    "relay_link_calendars", metadata,
    sa.Column("user", sa.Text, sa.ForeignKey("relay_links.user", ondelete="CASCADE"), primary_key=True),
    sa.Column("remote_url", sa.Text, primary_key=True),
    sa.Column("remote_name", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("blocks", sa.Boolean, nullable=False),
    sa.Column("mirror_path", sa.Text, nullable=False),
    sa.Column("ctag", sa.Text),
    sa.Column("sync_token", sa.Text),
    sa.Column("token_state", sa.Text, nullable=False, server_default="none"),
    sa.Column("last_success_at", sa.Float),
    sa.Column("last_attempt_at", sa.Float),
    sa.Column("last_error", sa.Text),
)
items_table = sa.Table(
    "relay_items", metadata,
    sa.Column("user", sa.Text, primary_key=True),
    sa.Column("calendar_url", sa.Text, primary_key=True),
    sa.Column("uid", sa.Text, primary_key=True),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("local_path", sa.Text),
    sa.Column("local_href", sa.Text),
    sa.Column("local_etag", sa.Text),
    sa.Column("local_hash", sa.Text),
    sa.Column("remote_href", sa.Text),
    sa.Column("remote_etag", sa.Text),
    sa.Column("remote_hash", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("relay_items_by_remote_href", "user", "remote_href"),
)
sync_requests_table = sa.Table(
    "relay_sync_requests", metadata,
    sa.Column("user", sa.Text, primary_key=True),
    sa.Column("requested_at", sa.Float, nullable=False),
)
pending_table = sa.Table(
    "relay_pending", metadata,
    sa.Column("user", sa.Text, primary_key=True),
    sa.Column("uid", sa.Text, primary_key=True),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("first_at", sa.Float, nullable=False),
    sa.Column("last_at", sa.Float, nullable=False),
)
#: The running pull of each calendar (an import's progress, for `calrelay status` and the API).
progress_table = sa.Table(
    "relay_pull_progress", metadata,
    sa.Column("user", sa.Text, primary_key=True),
    sa.Column("remote_url", sa.Text, primary_key=True),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("fetched", sa.Integer, nullable=False),
    sa.Column("written", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
generation_table = sa.Table(
    "relay_generation", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

RELAY_TABLES = [
    links_table, link_calendars_table, items_table, sync_requests_table, pending_table, generation_table,
    outbox_table, progress_table, instances, cluster_leases, apple_id_budgets,
]


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
    #: the link's policies as JSON (proxy.relay.policies); "{}" = the configured defaults
    policies: str = "{}"

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
    token_state: str = "none"  # none | valid | refused (fell back to listing) | remirror (policies changed)
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



#: A calendar's ``token_state`` when its availability policies changed: the next pull lists it whole and
#: writes every mirrored event again under the new policies (proxy.relay.decide.TokenState.REMIRROR).
REMIRROR = "remirror"

_PULL_STATE = ("ctag", "sync_token", "token_state", "last_success_at", "last_attempt_at", "last_error")


def _columns(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _row(cls: type[T], row: sa.Row[Any]) -> T:
    return cls(**row._asdict())


def create_tables(engine: Engine) -> None:
    """Create the relay's tables where missing. (The schema module's ``upgrade`` takes this over.)"""
    with writing(engine) as connection:
        if connection.dialect.name == "postgresql":
            # Instances starting together on a fresh database: one creates, the others wait and find the tables.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7243551)"))
        metadata.create_all(connection, tables=RELAY_TABLES)


def _upsert(connection: sa.Connection, table: sa.Table, rows: list[Mapping[str, Any]] | Mapping[str, Any]) -> None:
    """INSERT … ON CONFLICT (primary key) DO UPDATE every other column: one statement on both backends."""
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    keys = [column.name for column in table.primary_key.columns]
    sample = rows[0] if isinstance(rows, list) else rows
    statement = statement.on_conflict_do_update(
        index_elements=keys, set_={name: statement.excluded[name] for name in sample if name not in keys}
    )
    connection.execute(statement, rows)


class StateDB:
    """Blocking access to the relay's state. Safe to share between threads: each call takes a pooled
    connection for one transaction.

    A link's worker writes through :meth:`fenced_by`: a view whose every writing transaction first checks the
    link's lease token (:func:`proxy.cluster.leases.fenced`), so an instance that lost the lease writes nothing.
    """

    _fence: tuple[str, int] | None = None

    def __init__(self, target: str | Engine) -> None:
        self._owns_engine = not isinstance(target, Engine)
        self.engine = create_engine(target) if isinstance(target, str) else target
        with reachable(self.engine):
            create_tables(self.engine)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One writing transaction: committed on success, rolled back (nothing half-written) on error.

        In a fenced view, refused with :class:`~proxy.cluster.leases.LeaseLost` unless the lease is still held;
        the check locks the lease row until the commit, so no takeover slips in between."""
        with writing(self.engine) as connection:
            if self._fence is not None:
                fenced(connection, *self._fence)
            yield connection

    def fenced_by(self, link_key: str, token: int) -> StateDB:
        """The same database, every write of it carrying the lease token ``token`` of ``link_key``."""
        view = copy.copy(self)
        view._owns_engine = False
        view._fence = (link_key, token)
        return view

    def remove_outbox(self, ids: list[int]) -> None:
        """Drop outbox rows whose relay work is done (:func:`proxy.relay.outbox.reconciled`)."""
        with self.transaction() as db:
            outbox.remove_rows(db, ids)

    def ping(self) -> None:
        """One round trip to the database (``/health``)."""
        with reading(self.engine) as connection:
            connection.execute(sa.select(1))

    def data_version(self) -> int:
        """Changes whenever anyone (e.g. the CLI, another instance) changes the set of links or asks for a sync:
        a cheap way to notice new links."""
        with reading(self.engine) as connection:
            value = connection.execute(sa.select(generation_table.c.value)).scalar()
        return int(value or 0)

    def _bump(self, connection: sa.Connection) -> None:
        updated = connection.execute(
            generation_table.update().where(generation_table.c.id == 1).values(value=generation_table.c.value + 1)
        ).rowcount
        if not updated:
            connection.execute(generation_table.insert().values(id=1, value=1))

    # -- links ------------------------------------------------------------------------------------------

    def save_link(self, link: Link, calendars: list[LinkCalendar]) -> None:
        """Create or replace a link and its calendars. Keeps pull state of calendars that stay linked."""
        with self.transaction() as db:
            previous = {c.remote_url: c for c in self._link_calendars(db, link.user)}
            db.execute(link_calendars_table.delete().where(link_calendars_table.c.user == link.user))
            _upsert(db, links_table, {c: getattr(link, c) for c in _columns(Link)})
            linked = [calendar.remote_url for calendar in calendars]
            # Forget the status of calendars no longer linked: their mirrors are gone.
            db.execute(
                items_table.delete().where(items_table.c.user == link.user, items_table.c.calendar_url.not_in(linked))
            )
            rows = []
            for calendar in calendars:
                kept = previous.get(calendar.remote_url)
                if kept is not None and kept.mirror_path == calendar.mirror_path:
                    pull_state = {k: getattr(kept, k) for k in _PULL_STATE}
                    if calendar.token_state == REMIRROR:  # asked for by the caller: its policies changed
                        pull_state["token_state"] = REMIRROR
                    calendar = LinkCalendar(**{**calendar.__dict__, **pull_state})
                rows.append({c: getattr(calendar, c) for c in _columns(LinkCalendar)})
            if rows:
                db.execute(link_calendars_table.insert(), rows)
            self._bump(db)

    def link(self, user: str) -> Link | None:
        with reading(self.engine) as db:
            row = db.execute(sa.select(links_table).where(links_table.c.user == user)).first()
        return _row(Link, row) if row else None

    def links(self) -> list[Link]:
        with reading(self.engine) as db:
            return [_row(Link, r) for r in db.execute(sa.select(links_table).order_by(links_table.c.user))]

    def delete_link(self, user: str) -> bool:
        with self.transaction() as db:
            # The lease first, in the order a fenced write locks rows (the lease row, then the state rows), so
            # the two wait for each other instead of deadlocking. A worker still running for the link elsewhere
            # then finds its next write refused, and stops.
            db.execute(cluster_leases.delete().where(cluster_leases.c.link_key == user))
            deleted = db.execute(links_table.delete().where(links_table.c.user == user)).rowcount
            for table in (link_calendars_table, items_table, pending_table, outbox_table, progress_table):
                db.execute(table.delete().where(table.c.user == user))
            if deleted:
                self._bump(db)
        return bool(deleted)

    def set_link_state(self, user: str, state: str, error: str | None = None) -> float:
        """Record the link's state; returns the new ``updated_at``."""
        now = time.time()
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if error is not None:
            values |= {"last_error": error, "last_error_at": now}
        with self.transaction() as db:
            db.execute(links_table.update().where(links_table.c.user == user).values(**values))
        return now

    def clear_link_error(self, user: str) -> None:
        """The link recovered: forget its last error (``updated_at`` stays, this is not a change of the link)."""
        with self.transaction() as db:
            db.execute(
                links_table.update().where(links_table.c.user == user).values(last_error=None, last_error_at=None)
            )

    def link_calendars(self, user: str) -> list[LinkCalendar]:
        with reading(self.engine) as db:
            return self._link_calendars(db, user)

    def all_link_calendars(self) -> dict[str, list[LinkCalendar]]:
        """Every link's calendars, by user (one query: every instance reads it on each lease tick)."""
        table = link_calendars_table
        found: dict[str, list[LinkCalendar]] = {}
        with reading(self.engine) as db:
            for row in db.execute(sa.select(table).order_by(table.c.user, table.c.role.desc(), table.c.remote_name)):
                found.setdefault(row.user, []).append(_row(LinkCalendar, row))
        return found

    def _link_calendars(self, db: sa.Connection, user: str) -> list[LinkCalendar]:
        rows = db.execute(
            sa.select(link_calendars_table)
            .where(link_calendars_table.c.user == user)
            .order_by(link_calendars_table.c.role.desc(), link_calendars_table.c.remote_name)
        )
        return [_row(LinkCalendar, r) for r in rows]

    def update_pull_state(self, user: str, remote_url: str, keep_remirror: bool = False, **values: Any) -> None:
        """``keep_remirror``: a ``token_state`` of REMIRROR set meanwhile (a policy change while this pull ran)
        stays, so the re-mirror is not lost to a pull that began under the old policies."""
        unknown = set(values) - set(_PULL_STATE)
        if unknown:
            raise ValueError(f"not pull state: {sorted(unknown)}")
        table = link_calendars_table
        if keep_remirror and "token_state" in values:
            values["token_state"] = sa.case((table.c.token_state == REMIRROR, REMIRROR), else_=values["token_state"])
        with self.transaction() as db:
            db.execute(table.update().where(table.c.user == user, table.c.remote_url == remote_url).values(**values))

    # -- item status ------------------------------------------------------------------------------------

    def items(self, user: str, calendar_url: str | None = None) -> list[ItemStatus]:
        query = sa.select(items_table).where(items_table.c.user == user)
        if calendar_url is not None:
            query = query.where(items_table.c.calendar_url == calendar_url)
        with reading(self.engine) as db:
            return [_row(ItemStatus, r) for r in db.execute(query)]

    def items_for(self, user: str, calendar_url: str, uids: Sequence[str], remote_hrefs: Sequence[str]
                  ) -> list[ItemStatus]:
        """The calendar's statuses with one of ``uids`` or ``remote_hrefs`` (what one batch of a pull needs)."""
        c = items_table.c
        found: dict[str, ItemStatus] = {}
        with reading(self.engine) as db:
            for column, wanted in ((c.uid, uids), (c.remote_href, remote_hrefs)):
                values = list(dict.fromkeys(wanted))
                for start in range(0, len(values), 500):
                    query = sa.select(items_table).where(c.user == user, c.calendar_url == calendar_url,
                                                         column.in_(values[start:start + 500]))
                    found.update((status.uid, status) for status in (_row(ItemStatus, r) for r in db.execute(query)))
        return list(found.values())

    def save_item(self, item: ItemStatus) -> None:
        values = {c: time.time() if c == "updated_at" else getattr(item, c) for c in _columns(ItemStatus)}
        with self.transaction() as db:
            _upsert(db, items_table, values)

    def save_items(self, items: Sequence[ItemStatus]) -> None:
        """Save several statuses in one transaction and one statement (a batch of mirror writes)."""
        now = time.time()
        rows = [{c: now if c == "updated_at" else getattr(item, c) for c in _columns(ItemStatus)} for item in items]
        with self.transaction() as db:
            _upsert(db, items_table, rows)

    def delete_item(self, user: str, calendar_url: str, uid: str) -> None:
        table = items_table
        with self.transaction() as db:
            db.execute(table.delete().where(table.c.user == user, table.c.calendar_url == calendar_url,
                                            table.c.uid == uid))

    # -- pending work -----------------------------------------------------------------------------------

    def set_pending(self, user: str, uid: str, action: str, reason: str) -> None:
        now = time.time()
        table = pending_table
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table).values(
            user=user, uid=uid, action=action, reason=reason, attempts=1, first_at=now, last_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=["user", "uid"],
            set_={"action": statement.excluded.action, "reason": statement.excluded.reason,
                  "attempts": table.c.attempts + 1, "last_at": statement.excluded.last_at},
        )
        with self.transaction() as db:
            db.execute(statement)

    def replace_pending(self, user: str, entries: list[tuple[str, str, str]]) -> None:
        """Make the pending list exactly ``entries`` (uid, action, reason), keeping the history of UIDs that
        were already pending. Called with a fresh plan, so work that is no longer needed disappears."""
        now = time.time()
        table = pending_table
        with self.transaction() as db:
            known = {row.uid: row for row in db.execute(sa.select(table).where(table.c.user == user))}
            wanted = {uid for uid, _, _ in entries}
            gone = [uid for uid in known if uid not in wanted]
            if gone:
                db.execute(table.delete().where(table.c.user == user, table.c.uid.in_(gone)))
            _upsert(db, table, [
                {
                    "user": user, "uid": uid, "action": action,
                    "reason": known[uid].reason if uid in known and known[uid].action == action else reason,
                    "attempts": known[uid].attempts if uid in known else 0,
                    "first_at": known[uid].first_at if uid in known else now,
                    "last_at": now,
                }
                for uid, action, reason in entries
            ])

    def clear_pending(self, user: str, uid: str) -> None:
        with self.transaction() as db:
            db.execute(pending_table.delete().where(pending_table.c.user == user, pending_table.c.uid == uid))

    def request_sync(self, user: str) -> None:
        """Ask the running server for an immediate pull (``calrelay sync USER --now`` from another process)."""
        with self.transaction() as db:
            _upsert(db, sync_requests_table, {"user": user, "requested_at": time.time()})

    def take_sync_requests(self, relayed: list[str] | None = None) -> list[str]:
        """Take the pending requests (only those of the ``relayed`` users: another instance takes the rest)."""
        query = sa.select(sync_requests_table.c.user)
        if relayed is not None:
            query = query.where(sync_requests_table.c.user.in_(relayed))
        with self.transaction() as db:
            users = list(db.execute(query).scalars())
            if users:
                db.execute(sync_requests_table.delete().where(sync_requests_table.c.user.in_(users)))
        return users

    def import_rows(self, rows: Mapping[str, list[dict[str, Any]]]) -> None:
        """Take rows of the file layout's tables (``FILE_LAYOUT_TABLES``) as they are, in one transaction:
        ``calrelay db import-files``. Existing rows with the same keys are replaced, so a re-run is harmless."""
        with self.transaction() as db:
            _import_rows(db, rows)
            self._bump(db)

    def pending(self, user: str) -> list[Pending]:
        table = pending_table
        query = sa.select(table).where(table.c.user == user).order_by(table.c.first_at, table.c.uid)
        with reading(self.engine) as db:
            return [_row(Pending, r) for r in db.execute(query)]

    def lease(self, user: str) -> LeaseRow | None:
        """Who relays ``user``'s link: the lease row (holder None once released), or None if never taken."""
        with reading(self.engine) as db:
            row = db.execute(sa.select(cluster_leases).where(cluster_leases.c.link_key == user)).first()
        return LeaseRow(row.link_key, row.holder, row.token, row.acquired_at, row.expires_at) if row else None

    # -- running pulls (progress of an import, for `calrelay status` and the API) -------------------------

    def set_progress(self, user: str, remote_url: str, total: int, fetched: int, written: int,
                     started_at: float) -> None:
        row = {"user": user, "remote_url": remote_url, "total": total, "fetched": fetched, "written": written,
               "started_at": started_at, "updated_at": time.time()}
        with self.transaction() as db:
            _upsert(db, progress_table, row)

    def clear_progress(self, user: str, remote_url: str) -> None:
        table = progress_table
        with self.transaction() as db:
            db.execute(table.delete().where(table.c.user == user, table.c.remote_url == remote_url))

    def progress(self, user: str) -> dict[str, dict[str, float]]:
        """remote URL -> the running pull's total, fetched, written, started_at, updated_at."""
        table = progress_table
        with reading(self.engine) as db:
            rows = db.execute(sa.select(table).where(table.c.user == user)).mappings().all()
        return {r["remote_url"]: {k: r[k] for k in ("total", "fetched", "written", "started_at", "updated_at")}
                for r in rows}


#: The tables of the file layout's ``state.sqlite3`` and where their rows go (the columns are the same).
FILE_LAYOUT_TABLES = {
    "links": links_table, "link_calendars": link_calendars_table, "items": items_table,
    "pending": pending_table, "sync_requests": sync_requests_table,
}


def _import_rows(db: sa.Connection, rows: Mapping[str, list[dict[str, Any]]]) -> None:
    for name, table in FILE_LAYOUT_TABLES.items():  # links first: the calendars refer to them
        wanted = [{c.name: row[c.name] for c in table.columns if c.name in row} for row in rows.get(name, [])]
        for start in range(0, len(wanted), 500):
            _upsert(db, table, wanted[start:start + 500])


class AsyncState:
    """The relay's state for the event loop: calls run on a small thread pool (the database serialises writes;
    one caller's calls are awaited in order, so they stay in order)."""

    def __init__(self, target: str | Engine) -> None:
        self._executor = ThreadPoolExecutor(STATE_THREADS, thread_name_prefix="state-db")
        self.db = self._executor.submit(StateDB, target).result()

    def fenced_by(self, link_key: str, token: int) -> AsyncState:
        """A view for one link's worker: the same threads, every write fenced by the link's lease."""
        view = copy.copy(self)
        view.db = self.db.fenced_by(link_key, token)
        return view

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        except Exception as error:
            if database_unavailable(error):
                outage.down(error)
            raise
        outage.up()
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.db.close()
