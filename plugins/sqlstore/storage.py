"""The storage: discovery, creating, moving and deleting collections, locking, verification.

There is no storage-wide lock. ``acquire_lock`` opens a database transaction that every storage call of the
block shares: "r" a read snapshot (in WAL mode readers never wait for writers), "w" a writing transaction.
On SQLite a writing transaction holds the database's write lock from its start; on PostgreSQL discovery in a
writing block locks the collection rows it returns (``SELECT … FOR UPDATE``), so that a precondition checked
by Radicale (If-Match, If-None-Match) still holds when the write commits, across processes and machines.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from radicale import item as radicale_item
from radicale import pathutils
from radicale import storage as radicale_storage

from plugins.sqlstore import tables
from plugins.sqlstore.base import ConnectionMixin, safe_path
from plugins.sqlstore.collection import Collection
from proxy import database, schema
from proxy.outage import reachable

logger = logging.getLogger(__name__)

DEFAULT_HORIZON = 2 * 365 * 86400
DEFAULT_CAP = 1000

def _parent(path: str) -> str:
    return posixpath.dirname(path) if path else ""


class Storage(ConnectionMixin, radicale_storage.BaseStorage):
    _collection_class = Collection
    _is_collision_free = True
    _supports_unicode = True

    def __init__(self, configuration) -> None:
        super().__init__(configuration)
        url = configuration.get("storage", "calrelay_database")
        self.engine = database.create_engine(url)
        self.max_sync_token_age: int = configuration.get("storage", "max_sync_token_age")
        self.instance_horizon = int(_option(configuration, "calrelay_instance_horizon", DEFAULT_HORIZON))
        self.instance_cap = int(_option(configuration, "calrelay_instance_cap", DEFAULT_CAP))
        with reachable(self.engine):
            schema.prepare(self.engine)

    def close(self) -> None:
        """Close the database connections (the storage is not used afterwards)."""
        self.engine.dispose()

    # -- locking -------------------------------------------------------------------------------------

    @contextmanager
    def acquire_lock(self, mode: str, user: str = "", *args: Any, **kwargs: Any) -> Iterator[None]:
        with self.transaction(mode):
            yield

    # -- discovery -----------------------------------------------------------------------------------

    def _load(self, connection: sa.Connection, where: Any) -> list[Collection]:
        query = sa.select(tables.collections).where(where).order_by(tables.collections.c.path)
        if self.in_write_transaction():
            query = query.with_for_update()
        return [self._collection_class(self, row) for row in connection.execute(query)]

    def collection(self, connection: sa.Connection, path: str) -> Collection | None:
        found = self._load(connection, tables.collections.c.path == path)
        return found[0] if found else None

    def discover(
        self, path: str, depth: str = "0",
        child_context_manager: Callable[[str, str | None], ContextManager[None]] | None = None,
        user_groups: set[str] = set(),  # noqa: B006 (Radicale's signature)
    ) -> Iterator[Any]:
        sane = safe_path(path)
        if sane is None:
            logger.warning("Unsafe path %r requested from storage", path)
            return iter(())
        # Read everything before yielding (see Collection.get_multi).
        with self.transaction("r") as connection:
            self._ensure_root(connection)
            return iter(self._discover(connection, sane, depth))

    def _discover(self, connection: sa.Connection, sane: str, depth: str) -> list[Any]:
        collection = self.collection(connection, sane)
        if collection is None:
            if not sane:
                return []
            parent = self.collection(connection, _parent(sane))
            if parent is None:
                return []
            item = next(iter(parent.get_multi([posixpath.basename(sane)])))[1]
            return [item] if item is not None else []
        if depth == "0":
            return [collection]
        c = tables.collections.c
        return [collection, *collection.get_all(), *self._load(connection, sa.and_(c.parent == sane, c.path != ""))]

    def _ensure_root(self, connection: sa.Connection) -> None:
        if not self.in_write_transaction():
            return
        if connection.execute(sa.select(tables.collections.c.id).where(tables.collections.c.path == "")).first():
            return
        self._insert_collection(connection, "", {})

    def _insert_collection(self, connection: sa.Connection, path: str, props: Mapping[str, str]) -> Collection:
        connection.execute(tables.collections.insert().values(
            path=path, parent=_parent(path), owner=path.split("/", 1)[0], revision=0, sync_floor=0,
            props=json.dumps(dict(props), sort_keys=True), modified=time.time()))
        collection = self.collection(connection, path)
        assert collection is not None
        return collection

    def _ensure_ancestors(self, connection: sa.Connection, path: str) -> None:
        parts = path.split("/") if path else []
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            if self.collection(connection, ancestor) is None:
                self._insert_collection(connection, ancestor, {})

    def delete_tree(self, connection: sa.Connection, path: str) -> None:
        """Delete the collection at ``path`` and every collection below it (items go with them)."""
        c = tables.collections.c
        connection.execute(tables.collections.delete().where(
            sa.or_(c.path == path, c.path.startswith(path + "/", autoescape=True))))

    # -- creating and moving -------------------------------------------------------------------------

    def create_collection(self, href: str, items: Iterable[radicale_item.Item] | None = None, props=None):
        sane = safe_path(href)
        if sane is None:
            raise pathutils.UnsafePathError(href)
        with self.transaction("w") as connection:
            self._ensure_root(connection)
            self._ensure_ancestors(connection, sane)
            existing = self.collection(connection, sane)
            if not props:
                if existing is None:
                    existing = self._insert_collection(connection, sane, {})
                return existing, {}, []
            old_items: dict[str, radicale_item.Item] = {}
            if existing is not None:
                old_items = {item.href: item for item in existing.get_all() if item.href}
                self.delete_tree(connection, sane)
            collection = self._insert_collection(connection, sane, props)
            new_hrefs: list[str] = []
            suffix = {"VCALENDAR": ".ics", "VADDRESSBOOK": ".vcf"}.get(props.get("tag", ""))
            if items is not None and suffix is not None:
                revision = collection._bump(connection)
                taken: set[str] = set()
                for item in items:
                    href = _free_href(item.uid, suffix, taken)
                    taken.add(href)
                    collection._insert(connection, href, item)
                    collection._log_change(connection, href, revision, deleted=False)
                    new_hrefs.append(href)
            replaced = {href: old_items[href] for href in new_hrefs if href in old_items}
            return collection, replaced, [href for href in new_hrefs if href not in old_items]

    def move(self, item: radicale_item.Item, to_collection: radicale_storage.BaseCollection, to_href: str) -> None:
        if not pathutils.is_safe_filesystem_path_component(to_href):
            raise pathutils.UnsafePathError(to_href)
        source = item.collection
        assert isinstance(source, Collection) and isinstance(to_collection, Collection) and item.href
        with self.transaction("w") as connection:
            # The base class's delete: the move is one change, not a deletion plus an upload.
            Collection.delete(source, item.href)
            if to_collection.id == source.id:
                to_collection = source
            revision = to_collection._bump(connection)
            connection.execute(tables.items.delete().where(
                tables.items.c.collection_id == to_collection.id, tables.items.c.href == to_href))
            to_collection._insert(connection, to_href, item)
            to_collection._log_change(connection, to_href, revision, deleted=False)

    # -- the rest of the contract --------------------------------------------------------------------

    def verify(self) -> bool:
        """Every collection's props are valid and every item parses and has the stored UID."""
        ok = True
        with self.transaction("r") as connection:
            for row in connection.execute(sa.select(tables.collections.c.path, tables.collections.c.props)):
                try:
                    radicale_item.check_and_sanitize_props(json.loads(row.props))
                except ValueError as error:
                    logger.error("collection %r: invalid properties: %s", row.path, error)
                    ok = False
            query = sa.select(tables.collections.c.path, tables.items.c.href, tables.items.c.uid,
                              tables.items.c.text).join(tables.items)
            for row in connection.execute(query):
                try:
                    component = radicale_item.read_components(row.text)[0]
                    uid = radicale_item.get_uid_from_object(component)
                    if uid != row.uid:
                        raise ValueError(f"UID {uid!r} differs from the indexed {row.uid!r}")
                except Exception as error:
                    logger.error("item %r in %r: %s", row.href, row.path, error)
                    ok = False
        return ok


def _option(configuration: Any, option: str, default: Any) -> Any:
    try:
        return configuration.get("storage", option)
    except KeyError:
        return default


def _free_href(uid: str, suffix: str, taken: set[str]) -> str:
    """The href Radicale's file storage would give an imported item (see ``_upload_all_nonatomic``)."""
    for href in (uid if uid.lower().endswith(suffix.lower()) else uid + suffix,
                 radicale_item.get_etag(uid).strip('"') + suffix):
        if pathutils.is_safe_filesystem_path_component(href) and href not in taken:
            return href
    return radicale_item.find_available_uid(lambda href: href in taken, suffix)
