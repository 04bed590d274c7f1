"""Radicale storage plugin: the multifilesystem storage, plus the CRM rules and a change signal.

Radicale keeps doing all the storing (files, caches, sync-token history); this subclass adds two things:

- **Validation** of the CRM contract on write: ``{urn:calrelay}calendar-kind`` on MKCALENDAR and
  PROPPATCH, ``X-CALRELAY-KIND`` on every VEVENT that is PUT, and the mirror properties, which only the relay
  may set. A refusal raises ``ValueError`` (Radicale answers 400) after recording a message for the client.
- **Cheap change detection**: ``stamps()`` lists an item's file identity (inode, mtime, size) without reading
  it, and the UID check Radicale runs on every PUT uses a stamp-validated UID index instead of reading the
  whole collection, which made each PUT cost O(items) (tens of milliseconds at a thousand events).
- A **change signal** for every change the relay must see. Changes are recorded in the request's scope and
  published by the front door after Radicale returns, so no listener ever runs under the storage lock; a
  change made outside a client request (by the relay itself) goes straight to ``change_listener``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from radicale import item as radicale_item
from radicale import pathutils
from radicale.storage import multifilesystem

from plugins import scope
from plugins.scope import Change, ChangeAction
from proxy import stopping, validation
from proxy.config import LimitsSettings
from proxy.model import (
    CALENDAR_KIND_PROP,
    EVENT_KIND_PROPERTY,
    MIRROR_BLOCKS_PROP,
    MIRROR_ROLE_PROP,
    MIRROR_SOURCE_PROP,
    CalendarKind,
    EventKind,
    MirrorRole,
)

logger = logging.getLogger(__name__)

RELAY_ONLY_PROPS = (MIRROR_ROLE_PROP, MIRROR_SOURCE_PROP, MIRROR_BLOCKS_PROP)

# Radicale writes a new collection's props through set_meta while creating it; that is part of the one
# "collection created" change, not a PROPPATCH of its own.
_inside_create: ContextVar[bool] = ContextVar("calrelay_inside_create", default=False)
_syncing_later: ContextVar[bool] = ContextVar("calrelay_syncing_later", default=False)


@contextmanager
def one_sync() -> Iterator[None]:
    """Writes inside skip Radicale's per-file and per-directory fsyncs (six per item); one ``os.sync()`` at
    the end makes them all durable before the block returns. For the relay's batched mirror writes."""
    token = _syncing_later.set(True)
    try:
        yield
    finally:
        _syncing_later.reset(token)
        os.sync()


@contextmanager
def _creating() -> Iterator[None]:
    token = _inside_create.set(True)
    try:
        yield
    finally:
        _inside_create.reset(token)


#: Set by the engine around a REPORT that asks for ``expand``: items read then are about to be expanded.
expanding: ContextVar[bool] = ContextVar("calrelay_expanding", default=False)


def _reject(message: str) -> ValueError:
    scope.refuse(message)
    return ValueError(message)


def validate_props(props: Mapping[str, str], previous: Mapping[str, str] | None = None) -> None:
    """Refuse an unknown calendar kind, and client attempts to turn a collection into a mirror."""
    kind = props.get(CALENDAR_KIND_PROP)
    if kind is not None:
        try:
            CalendarKind.parse(kind)
        except ValueError as error:
            raise _reject(f"{CALENDAR_KIND_PROP}: {error}") from None
    if scope.current() is not None:  # a client request, not the relay
        for prop in RELAY_ONLY_PROPS:
            if props.get(prop) != (previous or {}).get(prop):
                raise _reject(f"{prop} is managed by calrelay's iCloud link and cannot be set by a client")


def validate_item(item: radicale_item.Item, limits: LimitsSettings | None = None, max_count: int = 20_000) -> None:
    """Refuse a VEVENT whose X-CALRELAY-KIND is neither APPOINTMENT nor BLOCKED, and objects that
    :func:`proxy.validation.calendar_problem` refuses (runaway recurrences, malformed or oversized objects)."""
    if item.vobject_item.name != "VCALENDAR":
        return
    problem = validation.calendar_problem(item.vobject_item, limits or LimitsSettings(), max_count)
    if problem:
        raise _reject(problem)
    for component in item.vobject_item.getChildren():
        if component.name != "VEVENT":
            continue
        for line in component.contents.get(EVENT_KIND_PROPERTY.lower(), []):
            try:
                EventKind.parse(str(line.value))
            except ValueError as error:
                uid = component.contents.get("uid", [None])[0]
                where = f" (UID {uid.value})" if uid is not None else ""
                raise _reject(f"{error}{where}") from None


#: (inode, mtime in ns, size) of an item file: Radicale replaces files atomically, so any write changes it.
Stamp = tuple[int, int, int]


class Collection(multifilesystem.Collection):
    _storage: Storage

    def stamps(self) -> dict[str, Stamp]:
        """href -> stamp of every item, from ``stat`` alone."""
        result = {}
        for href in self._list():
            try:
                stat = os.stat(os.path.join(self._filesystem_path, href))
            except FileNotFoundError:  # deleted meanwhile
                continue
            result[href] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        return result

    def has_uid(self, uid: str) -> bool:
        return uid in self._storage.uids_of(self)

    def upload(self, href: str, item: radicale_item.Item):
        validate_item(item, self._storage.limits, self._storage.max_count)
        result = super().upload(href, item)
        self._storage.emit(Change(ChangeAction.ITEM_PUT, self.path_with_slash, href))
        return result

    def get_all(self):
        # A PROPFIND or REPORT over a large collection reads item after item; its request may stop in between.
        for item in super().get_all():
            stopping.check()
            yield item

    def get_filtered(self, filters):
        # Radicale expands what a calendar-query returns; a stored runaway rule would keep it busy for minutes.
        for item, matched in super().get_filtered(filters):
            stopping.check()
            problem = self._storage.runaway_problem(self.path, item)
            if problem:
                raise _reject(problem)
            yield item, matched

    def get_multi(self, hrefs):
        # A calendar-multiget with expand reads its items here; the same refusal as for a calendar-query.
        for href, item in super().get_multi(hrefs):
            stopping.check()
            if item is not None and expanding.get():
                problem = self._storage.runaway_problem(self.path, item)
                if problem:
                    raise _reject(problem)
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

    @property
    def path_with_slash(self) -> str:
        return pathutils.unstrip_path(self.path, True)


class Storage(multifilesystem.Storage):
    _collection_class = Collection

    #: Receives changes made outside a client request (set by the engine; must be thread-safe).
    change_listener: Callable[[Change], None] = staticmethod(lambda change: None)
    #: Write-time ceilings (set by the engine from ``[limits]``) and the largest RRULE COUNT accepted.
    limits: LimitsSettings = LimitsSettings()
    max_count: int = 20_000

    def __init__(self, configuration) -> None:
        super().__init__(configuration)
        self._uid_index: dict[str, dict[str, tuple[Stamp, str]]] = {}  # folder -> href -> (stamp, uid)
        self._uid_index_lock = threading.Lock()
        self._runaway: dict[tuple[str, str, str], str | None] = {}

    def uids_of(self, collection: Collection) -> set[str]:
        """The UIDs in ``collection``, reading only the items whose file changed since the last call."""
        stamps = collection.stamps()
        with self._uid_index_lock:
            known = dict(self._uid_index.get(collection._filesystem_path, {}))
        index = {href: known[href] for href in stamps if href in known and known[href][0] == stamps[href]}
        stale = [href for href in stamps if href not in index]
        for href, item in collection.get_multi(stale):
            if item is not None:
                index[href] = (stamps[href], item.uid)
        with self._uid_index_lock:
            self._uid_index[collection._filesystem_path] = index
        return {uid for _, uid in index.values()}

    def runaway_problem(self, path: str, item: radicale_item.Item) -> str | None:
        """:func:`proxy.validation.runaway_problem` of a stored item, remembered per (href, ETag)."""
        key = (path, item.href or "", item.etag)
        with self._uid_index_lock:
            if key in self._runaway:
                return self._runaway[key]
        problem = validation.runaway_problem(item.vobject_item, self.limits)
        with self._uid_index_lock:
            if len(self._runaway) > 100_000:
                self._runaway.clear()
            self._runaway[key] = problem
        return problem

    def _fsync(self, f) -> None:
        if not _syncing_later.get():
            super()._fsync(f)

    def _sync_directory(self, path: str) -> None:
        if not _syncing_later.get():
            super()._sync_directory(path)

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
        """The mirror role recorded on the collection at ``path``, read from its props file."""
        sane_path = pathutils.strip_path(path)
        try:
            folder = pathutils.path_to_filesystem(
                self._get_collection_root_folder(), sane_path, self._is_collision_free
            )
            with open(os.path.join(folder, ".Radicale.props"), encoding="utf-8") as file:
                role = json.load(file).get(MIRROR_ROLE_PROP)
        except (OSError, ValueError, pathutils.UnsafePathError):
            return None
        try:
            return MirrorRole(role) if role else None
        except ValueError:
            logger.warning("collection %s has an unknown mirror role %r", path, role)
            return None
