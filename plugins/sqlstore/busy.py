"""The instance index as availability reads it: the candidate instances of a user's calendars over a window.

Every ``dav_instances`` row carries, besides the bounds Radicale's time-range test uses, the instance's exact
busy time and what decides whether it blocks (``plugins.sqlstore.instances.Descriptions``). A window reads
them with one statement (:func:`candidates`), which finds short instances by their start within a look-back
of the window and long ones (``long_busy``) by their start before its end, both through the index
``dav_instances_busy``. Floating times and dates are stored as UTC readings of the wall clock, so the
statement widens the window by :data:`FLOATING_SLACK` and the caller places them in the user's zone.

What the index does not list for a window is read as items instead (:func:`unindexed`): a series whose
listed instances stop before the window's end (the horizon, or the per-event cap), and an event with no
row at all (one beyond the horizon, or one that could not be expanded). The caller expands those itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from plugins.sqlstore import tables
from plugins.sqlstore.base import safe_path
from plugins.sqlstore.instances import FLOATING_SLACK, LONG_BUSY

#: Further widening for what a UTC reading or a travel time may shift: a series is read as an item when its
#: listed instances stop less than this after the window's end, so an instance starting just past the index
#: but blocking earlier (travel time, a zone west of UTC) is not missed.
MARGIN = FLOATING_SLACK + 86400
#: How far before the window a short instance may start: its length plus the shift of a UTC reading and of
#: a daylight-saving change.
_LOOKBACK = LONG_BUSY + 2 * FLOATING_SLACK


def _paths(paths: Sequence[str]) -> list[str]:
    return [sane for path in paths if (sane := safe_path(path)) is not None]


def _past_index(end: int) -> sa.ColumnElement[bool]:
    """A series that goes on past what the index lists for it, and that a window ending at ``end`` reaches."""
    i = tables.items.c
    return sa.and_(i.recurring, i.indexed_until < i.last_end, i.indexed_until < end + MARGIN)


def candidates(connection: sa.Connection, paths: Sequence[str], start: int, end: int) -> Sequence[Any]:
    """The index rows of the calendars at ``paths`` that may meet [start, end) (epoch seconds), except those
    of the series :func:`unindexed` returns. Rows have the collection's ``path`` and the item's ``uid``."""
    c, i, n = tables.collections.c, tables.items.c, tables.instances.c
    listed = sa.not_(_past_index(end))
    joined = tables.instances.join(tables.collections, c.id == n.collection_id).join(
        tables.items, sa.and_(i.collection_id == n.collection_id, i.href == n.href))
    columns = [c.path, n.href, i.uid, n.floating, n.transparent, n.status, n.busy_start, n.busy_end, n.travel,
               n.all_day, n.recurrence_id, n.summary, n.kind, n.origin, n.policy, n.declined]
    wanted = sa.and_(c.path.in_(_paths(paths)), listed, n.busy_end > start - FLOATING_SLACK)
    short = sa.select(*columns).select_from(joined).where(
        wanted, sa.not_(n.long_busy), n.busy_start >= start - _LOOKBACK, n.busy_start < end + FLOATING_SLACK)
    long = sa.select(*columns).select_from(joined).where(wanted, n.long_busy, n.busy_start < end + FLOATING_SLACK)
    return connection.execute(sa.union_all(short, long)).all()


def unindexed(connection: sa.Connection, paths: Sequence[str], start: int, end: int) -> Sequence[Any]:
    """The events of the calendars at ``paths`` whose instances over [start, end) the index does not list
    (see the module docstring): rows of ``path``, ``href``, ``etag`` and ``text``."""
    c, i, n = tables.collections.c, tables.items.c, tables.instances.c
    no_rows = ~sa.exists().where(n.collection_id == i.collection_id, n.href == i.href)
    return connection.execute(
        sa.select(c.path, i.href, i.etag, i.text).select_from(
            tables.items.join(tables.collections, c.id == i.collection_id)).where(
            c.path.in_(_paths(paths)), i.component == "VEVENT",
            i.first_start < end + MARGIN, i.last_end > start - MARGIN,
            sa.or_(_past_index(end), sa.and_(sa.not_(i.recurring), no_rows)),
        ).order_by(c.path, i.href)
    ).all()
