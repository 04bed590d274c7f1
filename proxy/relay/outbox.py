"""The transactional outbox: CRM writes whose relay work is not done yet, in the database.

A CRM write and the record of the relay work it causes must commit together, so that no crash between the
two can lose a push. :func:`record` therefore takes the *caller's* connection: the SQL storage plugin calls it
inside the transaction that writes the item, and the row exists exactly when the write does.

**Hand-over point.** Until the SQL storage plugin lands, calendars are files and there is no such
transaction: :class:`OutboxWriter` records the changes of each client request right after Radicale made them,
in the request's worker thread, before the response leaves (``Engine._run_wsgi``). A crash between the file
write and that record is still covered, as before, by the relay's full push pass at start-up, which compares
every appointment with its status. The plugin's write transaction replaces ``OutboxWriter``: it calls
``record(connection, …)`` beside its item write, and the engine's ``outbox`` hook goes away.

The relay consumes the rows: each push pass takes the rows present when it starts, and once the pass has
completed removes those whose item is reconciled with iCloud (:func:`reconciled`); a row whose item is still
pending (failed, throttled, refused) stays, and a pass stopped half-way removes none. The server's watcher
also wakes a link's relay when rows newer than it has seen appear, so a write taken by another instance
reaches this instance's relay within a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from plugins.scope import Change, ChangeAction
from proxy.cluster import wakeup
from proxy.database import metadata, reading, writing
from proxy.outage import database_unavailable, outage

logger = logging.getLogger(__name__)

outbox_table = sa.Table(
    "relay_outbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user", sa.Text, nullable=False),
    sa.Column("collection_path", sa.Text, nullable=False),
    sa.Column("href", sa.Text),  # None for a change of the whole collection
    sa.Column("action", sa.Text, nullable=False),  # a ChangeAction value
    sa.Column("recorded_at", sa.Float, nullable=False),
    sa.Index("relay_outbox_by_user", "user", "id"),
)

#: The changes that can cause relay work (property changes of a collection do not).
RELAYED_ACTIONS = frozenset({
    ChangeAction.ITEM_PUT, ChangeAction.ITEM_DELETE, ChangeAction.ITEM_MOVE,
    ChangeAction.COLLECTION_CREATE, ChangeAction.COLLECTION_DELETE,
})


@dataclass(frozen=True)
class OutboxRow:
    id: int
    user: str
    collection_path: str
    href: str | None
    action: str


def record(connection: sa.Connection, user: str, collection_path: str, href: str | None, action: str) -> None:
    """Record relay work in the caller's transaction (it commits, or rolls back, with the write).

    On PostgreSQL the same transaction notifies every instance (:mod:`proxy.cluster.wakeup`): PostgreSQL
    delivers the notification when, and only if, the write commits, so the instance relaying ``user`` wakes the
    moment the row is there to be seen (repeated notifications in one transaction are delivered once)."""
    connection.execute(outbox_table.insert().values(
        user=user, collection_path=collection_path, href=href, action=str(action), recorded_at=time.time()
    ))
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_notify(wakeup.CHANNEL, user)))


def record_changes(connection: sa.Connection, changes: Iterable[Change]) -> None:
    for change in changes:
        if change.action in RELAYED_ACTIONS:
            record(connection, change.user, change.path, change.href, change.action)
            if change.action is ChangeAction.ITEM_MOVE and change.target:
                record(connection, change.user, change.target, change.href, change.action)


class OutboxWriter:
    """Records a request's changes in a transaction of its own (until the SQL plugin: see the module doc)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, changes: list[Change]) -> None:
        if not any(change.action in RELAYED_ACTIONS for change in changes):
            return
        try:
            with writing(self.engine) as connection:
                record_changes(connection, changes)
        except Exception as error:
            # The write itself happened and is answered truthfully; the relay's full pass finds it.
            if not database_unavailable(error):
                raise
            outage.down(error)


def rows(engine: Engine, user: str) -> list[OutboxRow]:
    query = sa.select(outbox_table).where(outbox_table.c.user == user).order_by(outbox_table.c.id)
    with reading(engine) as connection:
        return [OutboxRow(r.id, r.user, r.collection_path, r.href, r.action) for r in connection.execute(query)]


def newest_ids(engine: Engine, after: int) -> tuple[int, set[str]]:
    """The newest row id, and the users with rows newer than ``after``."""
    with reading(engine) as connection:
        newest = connection.execute(sa.select(sa.func.max(outbox_table.c.id))).scalar() or 0
        users = set(connection.execute(
            sa.select(outbox_table.c.user).where(outbox_table.c.id > after).distinct()
        ).scalars()) if newest > after else set()
    return int(newest), users


def drop_users(engine: Engine, users: Iterable[str]) -> None:
    """Forget the rows of users without a link: nobody consumes them (a new link starts with a full pass)."""
    wanted = list(users)
    if wanted:
        with writing(engine) as connection:
            connection.execute(outbox_table.delete().where(outbox_table.c.user.in_(wanted)))


def remove_rows(connection: sa.Connection, ids: Iterable[int]) -> None:
    """Delete rows in the caller's transaction (the relay's is fenced by the link's lease)."""
    wanted = list(ids)
    for start in range(0, len(wanted), 500):
        connection.execute(outbox_table.delete().where(outbox_table.c.id.in_(wanted[start:start + 500])))


def reconciled(
    taken: Iterable[OutboxRow], uid_at: Mapping[tuple[str, str], str], pending_uids: set[str]
) -> list[int]:
    """The ids of ``taken`` whose item is reconciled after a completed push pass (pure).

    ``uid_at`` maps (collection path, href) to the UID the relay knows there, from the current appointments
    and from the statuses (so deleted items are found too). A row is reconciled unless the UID at its place
    is still pending; a place with no relayed UID (a blocked slot, a simple calendar, a whole collection)
    needs no relay work at all. A whole collection's row waits while any of its items is pending.
    """
    done = []
    for row in taken:
        if row.href is None:  # the whole collection: reconciled once none of its items is pending
            waiting = any(path == row.collection_path and uid in pending_uids for (path, _), uid in uid_at.items())
        else:
            waiting = uid_at.get((row.collection_path, row.href)) in pending_uids
        if not waiting:
            done.append(row.id)
    return done
