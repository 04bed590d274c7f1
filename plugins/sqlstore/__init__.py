"""calrelay's Radicale storage plugin on SQL (SQLite or PostgreSQL through SQLAlchemy Core).

The package follows Radicale's multifilesystem layout, one module per concern: ``tables`` (the schema),
``base`` (the request's transaction), ``collection`` (metadata, items, time-range candidates, uploads,
sync), ``instances`` (expanding events for the instance index) and ``storage`` (discovery, creation, moves,
locking, verification). This module adds calrelay's layer on top, as ``plugins.storage`` does for the file
storage: the CRM validation (the same functions) and the change signal for the relay.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

import sqlalchemy as sa
from radicale import item as radicale_item
from radicale import pathutils

from plugins import scope
from plugins.scope import Change, ChangeAction
from plugins.sqlstore import collection as _collection
from plugins.sqlstore import storage as _storage
from plugins.sqlstore import tables
from plugins.storage import _creating, _inside_create, validate_item, validate_props
from proxy.model import MIRROR_ROLE_PROP, MirrorRole

#: What the relay compares to see that an item changed: its ETag.
Stamp = str


class Collection(_collection.Collection):
    _storage: Storage

    def upload(self, href: str, item: radicale_item.Item):
        validate_item(item)
        result = super().upload(href, item)
        self._storage.emit(Change(ChangeAction.ITEM_PUT, self.path_with_slash, href))
        return result

    def delete(self, href: str | None = None) -> None:
        super().delete(href)
        if href is None:
            self._storage.emit(Change(ChangeAction.COLLECTION_DELETE, self.path_with_slash))
        else:
            self._storage.emit(Change(ChangeAction.ITEM_DELETE, self.path_with_slash, href))

    def set_meta(self, props: Mapping[str, str]) -> None:
        creating = _inside_create.get()
        validate_props(props, None if creating else self.get_meta())
        super().set_meta(props)
        if not creating:
            self._storage.emit(Change(ChangeAction.COLLECTION_PROPS, self.path_with_slash))


class Storage(_storage.Storage):
    _collection_class = Collection

    #: Receives changes made outside a client request (set by the engine; must be thread-safe).
    change_listener: Callable[[Change], None] = staticmethod(lambda change: None)

    def emit(self, change: Change) -> None:
        current = scope.current()
        if current is not None:
            current.changes.append(change)
        else:
            self.change_listener(change)

    def create_collection(self, href: str, items: Iterable[radicale_item.Item] | None = None, props=None):
        if items is not None:
            items = list(items)
            for item in items:
                validate_item(item)
        with _creating():
            if props:
                validate_props(props)
            result = super().create_collection(href, items, props)
        self.emit(Change(ChangeAction.COLLECTION_CREATE, pathutils.unstrip_path(pathutils.strip_path(href), True)))
        return result

    def move(self, item: radicale_item.Item, to_collection, to_href: str) -> None:
        source = item.collection
        assert isinstance(source, Collection) and isinstance(to_collection, Collection)
        from_href = item.href
        super().move(item, to_collection, to_href)
        self.emit(Change(ChangeAction.ITEM_MOVE, source.path_with_slash, from_href, to_collection.path_with_slash))

    def mirror_role(self, path: str) -> MirrorRole | None:
        """The mirror role recorded on the collection at ``path``."""
        sane = pathutils.strip_path(path)
        with self.transaction("r") as connection:
            props = connection.execute(
                sa.select(tables.collections.c.props).where(tables.collections.c.path == sane)).scalar()
        if props is None:
            return None
        role = json.loads(props).get(MIRROR_ROLE_PROP)
        try:
            return MirrorRole(role) if role else None
        except ValueError:
            return None
