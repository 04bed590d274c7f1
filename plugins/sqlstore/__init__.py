"""calrelay's Radicale storage plugin on SQL (SQLite or PostgreSQL through SQLAlchemy Core).

The package follows Radicale's multifilesystem layout, one module per concern: ``tables`` (the schema),
``base`` (the request's transaction), ``collection`` (metadata, items, time-range candidates, uploads,
sync), ``instances`` (expanding events for the instance index) and ``storage`` (discovery, creation, moves,
locking, verification). This module adds calrelay's layer on top: the CRM rules (``plugins.rules``), the
guard against expanding a stored runaway rule, the stop checks of a read request whose client went away
(``proxy.stopping``, between two items), and the change signal for the relay. Changes are recorded in
the request's scope and published by the front door after Radicale returns, so no listener runs inside the
transaction; a change made outside a client request (by the relay itself) goes straight to
``change_listener``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping

import sqlalchemy as sa
from radicale import item as radicale_item
from radicale import pathutils

from plugins import scope
from plugins.rules import _inside_create, creating, validate_item, validate_props
from plugins.rules import reject as validation_refusal
from plugins.scope import Change, ChangeAction
from plugins.sqlstore import collection as _collection
from plugins.sqlstore import expansion, hint, parsed, tables
from plugins.sqlstore import storage as _storage
from proxy import stopping, validation, vobject_zones
from proxy.config import LimitsSettings
from proxy.model import MIRROR_ROLE_PROP, MirrorRole

# Before anything here parses: one user's VTIMEZONE must not decide how another user's times are read.
vobject_zones.install()

#: What the relay compares to see that an item changed: its ETag.
Stamp = str


class Collection(_collection.Collection):
    _storage: Storage

    def upload(self, href: str, item: radicale_item.Item):
        validate_item(item, self._storage.limits, self._storage.max_count)
        result = super().upload(href, item)
        self._storage.emit(Change(ChangeAction.ITEM_PUT, self.path_with_slash, href))
        return result

    def upload_many(self, items):
        for _, item in items:
            validate_item(item, self._storage.limits, self._storage.max_count)
        etags = super().upload_many(items)
        for href in dict(items):
            self._storage.emit(Change(ChangeAction.ITEM_PUT, self.path_with_slash, href))
        return etags

    def get_all(self):
        # A PROPFIND or REPORT over a large collection works item after item; its request may stop in between.
        for item in super().get_all():
            stopping.check()
            yield item

    def get_filtered(self, filters):
        # Radicale expands what a calendar-query returns; a stored runaway rule would keep it busy for minutes.
        for item, matched in super().get_filtered(filters):
            stopping.check()
            problem = self._storage.runaway_problem(self.path, item)
            if problem:
                raise validation_refusal(problem)
            yield item, matched

    def get_multi(self, hrefs):
        # A calendar-multiget with expand reads its items here; the same refusal as for a calendar-query.
        for href, item in super().get_multi(hrefs):
            stopping.check()
            if item is not None and hint.current().expanding:
                problem = self._storage.runaway_problem(self.path, item)
                if problem:
                    raise validation_refusal(problem)
            yield href, item

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
    #: Write-time ceilings (set by the engine from ``[limits]``) and the largest RRULE COUNT accepted.
    limits: LimitsSettings = LimitsSettings()
    max_count: int = 20_000

    def __init__(self, configuration) -> None:
        super().__init__(configuration)
        hint.install()
        expansion.install()
        self._runaway: dict[tuple[str, str, str], str | None] = {}
        self._runaway_lock = threading.Lock()

    def runaway_problem(self, path: str, item: radicale_item.Item) -> str | None:
        """:func:`proxy.validation.runaway_problem` of a stored item, remembered per (href, ETag)."""
        key = (path, item.href or "", item.etag)
        with self._runaway_lock:
            if key in self._runaway:
                return self._runaway[key]
        text = item.serialize()
        # A copy of its own from the parse cache, apart from ``item``: Radicale's expand works on shallow copies
        # of the item, which would share (and each rewrite) a component parsed here. Only a rule can run away.
        problem = validation.runaway_problem(parsed.CACHE.parse(item.etag, text), self.limits) \
            if "RRULE" in text else None
        with self._runaway_lock:
            if len(self._runaway) > 100_000:
                self._runaway.clear()
            self._runaway[key] = problem
        return problem

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
                validate_item(item, self.limits, self.max_count)
        with creating():
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
