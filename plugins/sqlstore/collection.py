"""One collection: its metadata, items, time-range queries, uploads, deletions and sync (RFC 6578)."""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from radicale import item as radicale_item
from radicale import pathutils
from radicale import storage as radicale_storage
from radicale.item import filter as radicale_filter

from plugins.sqlstore import hint, parsed, tables
from plugins.sqlstore.base import http_date
from plugins.sqlstore.instances import FLOATING_SLACK, Instance, expand

if TYPE_CHECKING:
    from plugins.sqlstore.storage import Storage

SYNC_PREFIX = "http://radicale.org/ns/sync/"
_CHUNK = 500
#: What an item read without its text is made of.
_WITHOUT_TEXT = tuple(tables.items.c[name] for name in (
    "href", "etag", "uid", "name", "component", "first_start", "last_end", "modified"))


@functools.lru_cache(maxsize=4096)
def _http_date(epoch: int) -> str:
    """Items written together share their second: one string for them all."""
    return http_date(epoch)


def instance_rows(collection_id: int, href: str, instances: Iterable[Instance]) -> list[dict[str, Any]]:
    """The ``dav_instances`` rows of an item's expanded instances."""
    return [{"collection_id": collection_id, "href": href, "start": instance.start, "end": instance.end,
             "floating": instance.floating, "transparent": instance.transparent, "status": instance.status,
             **instance.busy}
            for instance in instances]


def _meets(start: int, end: int) -> sa.ColumnElement[bool]:
    """An indexed instance meets [start, end) as Radicale's time-range test decides.

    Radicale reads floating times and dates as UTC and gives an event without a duration one second (a
    date: one day, which the index holds as DTEND); it tests ``instance start < end and start < instance
    end``. The index holds floating instances widened by :data:`FLOATING_SLACK` on both sides, which is
    taken off again here.
    """
    n = tables.instances.c
    exact = sa.and_(sa.not_(n.floating), n.start < end, n.end > start)
    floating = sa.and_(n.floating, n.start + FLOATING_SLACK < end,
                       sa.or_(n.end - FLOATING_SLACK > start, n.start + FLOATING_SLACK + 1 > start))
    return sa.or_(exact, floating)


def _instance_hits(collection_id: int, start: int, end: int) -> sa.Subquery:
    """The hrefs with an indexed instance in [start, end) (floating ones widened), each with ``proven``: one
    of them meets the range as Radicale's test would (:func:`_meets`).

    One scan of the range index for the whole query: a correlated EXISTS per candidate made SQLite walk the
    index from the collection's first instance for every recurring candidate (2 s at 10,000 events).
    """
    n = tables.instances.c
    return (sa.select(n.href, sa.func.max(sa.case((_meets(start, end), 1), else_=0)).label("proven"))
            .where(n.collection_id == collection_id, n.start < end, n.end > start)
            .group_by(n.href).subquery("hits"))


class Collection(radicale_storage.BaseCollection):
    """A row of ``dav_collections``, as read at discovery (inside the request's transaction)."""

    def __init__(self, storage: Storage, row: Any) -> None:
        self._storage = storage
        self._path: str = row.path
        self.id: int = row.id
        self._props: dict[str, str] = json.loads(row.props)
        self._revision: int = row.revision
        self._sync_floor: int = row.sync_floor
        self._modified: float = row.modified

    @property
    def path(self) -> str:
        return self._path

    @property
    def path_with_slash(self) -> str:
        return pathutils.unstrip_path(self.path, True)

    # -- metadata ------------------------------------------------------------------------------------

    def get_meta(self, key: str | None = None):
        props = radicale_item.check_and_sanitize_props(dict(self._props))
        return props if key is None else props.get(key)

    def set_meta(self, props: Mapping[str, str]) -> None:
        with self._storage.transaction("w") as connection:
            self._props = dict(props)
            self._bump(connection, props=json.dumps(self._props, sort_keys=True))

    @property
    def etag(self) -> str:
        # Every change bumps the revision; the id tells a re-created collection from its predecessor.
        digest = hashlib.sha256(f"{self.id}:{self._revision}".encode()).hexdigest()
        return f'"{digest}"'

    @property
    def last_modified(self) -> str:
        return http_date(self._modified)

    def _bump(self, connection: sa.Connection, **values: Any) -> int:
        now = time.time()
        row = connection.execute(
            tables.collections.update()
            .where(tables.collections.c.id == self.id)
            .values(revision=tables.collections.c.revision + 1, modified=now, **values)
            .returning(tables.collections.c.revision)
        ).one()
        self._revision, self._modified = row.revision, now
        return row.revision

    # -- reading items -------------------------------------------------------------------------------

    def _item(self, row: Any, texts: parsed.Texts | None = None) -> radicale_item.Item:
        """The item of a row of :meth:`_select` (with its text), or of ``_select(text=False)`` reading it from
        ``texts``."""
        # The driver makes new strings per row: the two names are shared (100 bytes an item at 100,000 items).
        return parsed.Item.stored(
            self, row.href, row.etag, row.uid, sys.intern(row.name), sys.intern(row.component),
            (row.first_start, row.last_end), _http_date(int(row.modified)),
            text=None if texts is not None else row.text, texts=texts)

    def _select(self, text: bool = True) -> sa.Select:
        columns = (tables.items,) if text else _WITHOUT_TEXT
        return sa.select(*columns).where(tables.items.c.collection_id == self.id)

    def _texts(self) -> parsed.Texts:
        """A batch reading the texts of some of this collection's items (see :class:`parsed.Texts`)."""
        def read(hrefs: list[str]) -> Iterator[tuple[str, str]]:
            i = tables.items.c
            with self._storage.transaction("r") as connection:
                for start in range(0, len(hrefs), _CHUNK):
                    yield from connection.execute(sa.select(i.href, i.text).where(
                        i.collection_id == self.id, i.href.in_(hrefs[start:start + _CHUNK])))
        return parsed.Texts(read)

    def get_multi(self, hrefs: Iterable[str]) -> Iterator[tuple[str, radicale_item.Item | None]]:
        # Read everything before yielding: a caller may abandon the iterator, and a transaction must
        # never stay open (or bound to the caller's context) across a yield. A few items are read with their
        # text (a GET, a multiget); many (a sync-collection from scratch) without, until one needs it.
        wanted = list(dict.fromkeys(hrefs))
        texts = self._texts() if len(wanted) > _CHUNK else None
        found: dict[str, radicale_item.Item] = {}
        with self._storage.transaction("r") as connection:
            for start in range(0, len(wanted), _CHUNK):
                for row in connection.execute(self._select(text=texts is None).where(
                        tables.items.c.href.in_(wanted[start:start + _CHUNK]))):
                    found[row.href] = self._item(row, texts)
        return iter([(href, found.get(href)) for href in wanted])

    def get_all(self) -> Iterator[radicale_item.Item]:
        # Without the texts: a PROPFIND, the one caller that reads a large collection whole, rarely needs them.
        texts = self._texts()
        with self._storage.transaction("r") as connection:
            items = [self._item(row, texts)
                     for row in connection.execute(self._select(text=False).order_by(tables.items.c.href))]
        return iter(items)

    def get_filtered(self, filters: Iterable[Any]) -> Iterator[tuple[radicale_item.Item, bool]]:
        """Candidates of a REPORT: the items whose instances may meet the time range.

        A non-recurring item is judged by its bounds; a recurring event by the instance index, or by its
        bounds when the range reaches past what the index lists for it (horizon or per-event cap). A
        candidate comes with ``matched=True`` when that is proven, so that Radicale does not parse and test
        it again: an item lying within the range (as Radicale's own storage decides), or, for a plain VEVENT
        time-range filter, an event with an indexed instance that meets the range exactly as Radicale's
        test would (see :func:`_meets`). The others Radicale tests itself.
        """
        if not self.tag:
            return
        tag, start, end, simple = radicale_filter.simplify_prefilters(filters, self.tag)
        unbounded = start <= radicale_filter.TIMESTAMP_MIN and end >= radicale_filter.TIMESTAMP_MAX
        hinted = hint.current().expand_range if unbounded else None
        if hinted is not None:
            # An expanding query: Radicale applies this range itself after expanding, so it narrows the
            # candidates only; what the filters ask (the component) is matched as Radicale's would be.
            start, end = hinted
        query = self._select()
        if tag is not None:
            query = query.where(tables.items.c.component == tag)
        prove = simple and hinted is None and tag == "VEVENT"
        if start > radicale_filter.TIMESTAMP_MIN or end < radicale_filter.TIMESTAMP_MAX:
            i = tables.items.c
            hits = _instance_hits(self.id, start, end)
            query = query.add_columns(hits.c.proven).outerjoin(hits, hits.c.href == i.href).where(
                i.first_start < end, i.last_end > start,
                sa.or_(sa.not_(i.recurring), i.indexed_until < end, hits.c.href.is_not(None)),
            )
        with self._storage.transaction("r") as connection:
            rows = connection.execute(query).all()
        for row in rows:
            item = self._item(row)
            istart, iend = row.first_start, row.last_end
            proven = prove and bool(getattr(row, "proven", False))
            yield item, simple and (hinted is not None or proven or start <= istart or iend <= end)

    def has_uid(self, uid: str) -> bool:
        with self._storage.transaction("r") as connection:
            return connection.execute(
                sa.select(sa.literal(1)).where(tables.items.c.collection_id == self.id,
                                               tables.items.c.uid == uid).limit(1)
            ).first() is not None

    def stamps(self) -> dict[str, str]:
        """href -> ETag of every item, without reading the items' text."""
        with self._storage.transaction("r") as connection:
            rows = connection.execute(sa.select(tables.items.c.href, tables.items.c.etag)
                                      .where(tables.items.c.collection_id == self.id))
            return {href: etag for href, etag in rows}

    # -- writing -------------------------------------------------------------------------------------

    def upload(self, href: str, item: radicale_item.Item
               ) -> tuple[radicale_item.Item, radicale_item.Item | None]:
        if not pathutils.is_safe_filesystem_path_component(href):
            raise pathutils.UnsafePathError(href)
        with self._storage.transaction("w") as connection:
            revision = self._bump(connection)
            old = next(iter(self.get_multi([href])))[1]
            if old is not None:
                connection.execute(tables.items.delete().where(
                    tables.items.c.collection_id == self.id, tables.items.c.href == href))
            self._insert(connection, href, item)
            self._log_change(connection, href, revision, deleted=False)
            stored = next(iter(self.get_multi([href])))[1]
        assert stored is not None
        return stored, old

    def upload_many(self, items: list[tuple[str, radicale_item.Item]]) -> list[str]:
        """Store several items as one change of the collection (one revision, a few statements for them all);
        returns their ETags. The relay's batched mirror writes; the outcome is that of ``upload`` one by one."""
        for href, _ in items:
            if not pathutils.is_safe_filesystem_path_component(href):
                raise pathutils.UnsafePathError(href)
        latest = dict(items)  # the last write of an href wins, as one by one
        rows = [self._rows(href, item) for href, item in latest.items()]
        hrefs = list(latest)
        with self._storage.transaction("w") as connection:
            revision = self._bump(connection)
            i, c = tables.items.c, tables.changes.c
            for start in range(0, len(hrefs), _CHUNK):
                chunk = hrefs[start:start + _CHUNK]
                connection.execute(tables.items.delete().where(i.collection_id == self.id, i.href.in_(chunk)))
                connection.execute(tables.changes.delete().where(c.collection_id == self.id, c.href.in_(chunk)))
            if rows:
                connection.execute(tables.items.insert(), [row for row, _ in rows])
                instances = [instance for _, found in rows for instance in found]
                if instances:
                    connection.execute(tables.instances.insert(), instances)
                now = time.time()
                connection.execute(tables.changes.insert(), [
                    {"collection_id": self.id, "href": href, "revision": revision, "deleted": False, "changed": now}
                    for href in hrefs])
        return [item.etag for _, item in items]

    def _insert(self, connection: sa.Connection, href: str, item: radicale_item.Item) -> None:
        row, instances = self._rows(href, item)
        connection.execute(tables.items.insert().values(**row))
        if instances:
            connection.execute(tables.instances.insert(), instances)

    def _rows(self, href: str, item: radicale_item.Item) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The item's row and its instance index rows."""
        now = time.time()
        first, last = item.time_range
        text = item.serialize()
        recurring = False
        if item.name == "VCALENDAR":
            recurring = any(
                name in getattr(component, "contents", {})
                for component in item.vobject_item.getChildren()
                for name in ("rrule", "rdate"))
        rows: list[dict[str, Any]] = []
        indexed_until = first
        if item.component_name == "VEVENT":
            horizon = int(now) + self._storage.instance_horizon
            expansion = expand(text, first, min(horizon, last), self._storage.instance_cap)
            indexed_until = expansion.complete_until if recurring else radicale_filter.TIMESTAMP_MAX
            rows = instance_rows(self.id, href, expansion.instances)
        elif not recurring:
            indexed_until = radicale_filter.TIMESTAMP_MAX
        return {
            "collection_id": self.id, "href": href, "uid": item.uid, "etag": item.etag, "name": item.name,
            "component": item.component_name, "text": text, "first_start": first, "last_end": last,
            "recurring": recurring, "indexed_until": indexed_until, "modified": now,
        }, rows

    def _log_change(self, connection: sa.Connection, href: str, revision: int, *, deleted: bool) -> None:
        c = tables.changes.c
        values = {"revision": revision, "deleted": deleted, "changed": time.time()}
        updated = connection.execute(
            tables.changes.update().where(c.collection_id == self.id, c.href == href).values(**values))
        if updated.rowcount == 0:
            connection.execute(tables.changes.insert().values(collection_id=self.id, href=href, **values))
        if deleted:
            self._expire_tombstones(connection)

    def _expire_tombstones(self, connection: sa.Connection) -> None:
        """Forget deletions older than the token age; tokens from before them can no longer be served."""
        c = tables.changes.c
        old = sa.and_(c.collection_id == self.id, c.deleted,
                      c.changed < time.time() - self._storage.max_sync_token_age)
        floor = connection.execute(sa.select(sa.func.max(c.revision)).where(old)).scalar()
        if floor is not None:
            connection.execute(tables.changes.delete().where(old))
            connection.execute(tables.collections.update().where(tables.collections.c.id == self.id)
                               .values(sync_floor=sa.func.max(tables.collections.c.sync_floor, floor)
                                       if connection.dialect.name == "sqlite"
                                       else sa.func.greatest(tables.collections.c.sync_floor, floor)))
            self._sync_floor = max(self._sync_floor, floor)

    def delete(self, href: str | None = None) -> None:
        with self._storage.transaction("w") as connection:
            if href is None:
                self._storage.delete_tree(connection, self.path)
                return
            if not pathutils.is_safe_filesystem_path_component(href):
                raise pathutils.UnsafePathError(href)
            deleted = connection.execute(tables.items.delete().where(
                tables.items.c.collection_id == self.id, tables.items.c.href == href))
            if deleted.rowcount == 0:
                raise radicale_storage.ComponentNotFoundError(href)
            self._log_change(connection, href, self._bump(connection), deleted=True)

    # -- sync ----------------------------------------------------------------------------------------

    def sync(self, old_token: str = "") -> tuple[str, Iterable[str]]:
        """The token names (collection, revision, issue time); changes since a token cost O(changes)."""
        token = f"{SYNC_PREFIX}{self.id}-{self._revision}-{int(time.time())}"
        c = tables.changes.c
        with self._storage.transaction("r") as connection:
            if not old_token:
                return token, [row.href for row in connection.execute(
                    sa.select(tables.items.c.href).where(tables.items.c.collection_id == self.id))]
            revision = self._parse_token(old_token)
            if revision == self._revision:
                return token, []
            return token, [row.href for row in connection.execute(
                sa.select(c.href).where(c.collection_id == self.id, c.revision > revision))]

    def _parse_token(self, token: str) -> int:
        """The revision of a token of this collection; ValueError (403 valid-sync-token) otherwise."""
        try:
            if not token.startswith(SYNC_PREFIX):
                raise ValueError
            collection_id, revision, issued = (int(part) for part in token[len(SYNC_PREFIX):].split("-"))
        except ValueError:
            raise ValueError(f"Malformed token: {token!r}") from None
        if collection_id != self.id or revision > self._revision:
            raise ValueError(f"Token not found: {token!r}")
        if revision < self._sync_floor or time.time() - issued > self._storage.max_sync_token_age:
            raise ValueError(f"Token expired: {token!r}")
        return revision
