"""Keeping the instance index ahead of time: recurring events re-expanded as the horizon moves.

An event is indexed, when it is stored, up to ``now + horizon`` (two years by default). Time passes, and a
series that goes on beyond that point would be judged by its bounds alone for a range past it: still a
right answer (Radicale tests such candidates itself), but no longer one the index proves, and availability
would not see those instances. :func:`extend` re-expands every such series up to the new horizon. It runs
in the background (``proxy.app``), so each series is re-expanded about once per ``margin`` (30 days).

It touches only the index rows of an item whose text it read (the update checks the ETag), so a PUT
meanwhile wins; it is idempotent, so several calrelay processes on one database may all run it.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from radicale.item.filter import TIMESTAMP_MAX

from plugins.sqlstore import tables
from plugins.sqlstore.collection import instance_rows
from plugins.sqlstore.instances import expand
from proxy import database

logger = logging.getLogger(__name__)

DEFAULT_MARGIN = 30 * 86400
_BATCH = 200


def due(horizon: int, cap: int, margin: int, now: float) -> sa.Select:
    """The items whose index stops more than ``margin`` short of ``now + horizon`` while their series goes
    on, and that have not reached the per-event cap."""
    i, n = tables.items.c, tables.instances.c
    indexed = sa.select(sa.func.count()).where(
        n.collection_id == i.collection_id, n.href == i.href).scalar_subquery()
    return sa.select(i.collection_id, i.href, i.etag, i.text, i.first_start, i.last_end).where(
        i.recurring, i.component == "VEVENT", i.last_end > i.indexed_until,
        i.indexed_until < int(now) + horizon - margin, indexed < cap,
    ).order_by(i.collection_id, i.href)


def extend(engine: sa.Engine, horizon: int, cap: int, *, margin: int = DEFAULT_MARGIN,
           now: float | None = None) -> int:
    """Re-expand the items :func:`due` up to ``now + horizon``; how many were re-indexed."""
    now = time.time() if now is None else now
    target = int(now) + horizon
    done = 0
    after: tuple[int, str] = (-1, "")
    while True:
        i = tables.items.c
        with database.reading(engine) as connection:
            rows = connection.execute(due(horizon, cap, margin, now).where(
                sa.tuple_(i.collection_id, i.href) > sa.tuple_(*after)).limit(_BATCH)).all()
        if not rows:
            return done
        after = (rows[-1].collection_id, rows[-1].href)
        expansions = [(row, expand(row.text, row.first_start, min(target, row.last_end), cap)) for row in rows]
        with database.writing(engine) as connection:
            for row, expansion in expansions:
                if expansion.complete_until <= row.first_start:  # could not expand: leave it as it is
                    continue
                updated = connection.execute(tables.items.update().where(
                    i.collection_id == row.collection_id, i.href == row.href, i.etag == row.etag,
                ).values(indexed_until=expansion.complete_until))
                if updated.rowcount == 0:  # changed meanwhile: its new version was indexed when stored
                    continue
                n = tables.instances.c
                connection.execute(tables.instances.delete().where(
                    n.collection_id == row.collection_id, n.href == row.href))
                new_rows = instance_rows(row.collection_id, row.href, expansion.instances)
                if new_rows:
                    connection.execute(tables.instances.insert(), new_rows)
                done += 1
        logger.info("instance index: %d series extended to %s", done,
                    time.strftime("%Y-%m-%d", time.gmtime(target)))


def rebuild(connection: sa.Connection, horizon: int, cap: int, *, now: float | None = None) -> int:
    """Make the instance index again from every stored event, up to ``now + horizon`` (a schema step whose
    rows gained columns: ``proxy.schema``); how many events were indexed."""
    now = time.time() if now is None else now
    tables.instances.drop(connection)
    tables.instances.create(connection)
    i = tables.items.c
    done = 0
    after: tuple[int, str] = (-1, "")
    while True:
        rows = connection.execute(
            sa.select(i.collection_id, i.href, i.text, i.first_start, i.last_end, i.recurring)
            .where(i.component == "VEVENT", sa.tuple_(i.collection_id, i.href) > sa.tuple_(*after))
            .order_by(i.collection_id, i.href).limit(_BATCH)).all()
        if not rows:
            return done
        after = (rows[-1].collection_id, rows[-1].href)
        for row in rows:
            expansion = expand(row.text, row.first_start, min(int(now) + horizon, row.last_end), cap)
            # As when the event was stored (Collection._rows): a lone event's rows are all there are.
            indexed_until = expansion.complete_until if row.recurring else TIMESTAMP_MAX
            connection.execute(tables.items.update().where(
                i.collection_id == row.collection_id, i.href == row.href).values(indexed_until=indexed_until))
            new_rows = instance_rows(row.collection_id, row.href, expansion.instances)
            if new_rows:
                connection.execute(tables.instances.insert(), new_rows)
        done += len(rows)
        logger.info("instance index: %d events indexed again", done)
