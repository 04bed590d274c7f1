"""Parse each stored calendar object once: a process-wide cache of parsed (vobject) items.

Radicale parses an item's text with vobject whenever it tests a filter on it or expands it, and a
calendar-query with ``expand`` even parses each answer twice (once per requested property, on copies of
the item). Parsing is most of a query's cost (a VTIMEZONE alone takes milliseconds), so the storage hands
out items whose parsed form is rebuilt from a pickle of the first parse, which costs a small fraction of
parsing. Each access gets its own fresh copy: Radicale's expansion rewrites the component it works on.

The pickles are made in this process from text it parsed itself and never leave it. The cache is keyed by
ETag (a digest of the text) and bounded in bytes, least recently used first out.
"""

from __future__ import annotations

import datetime
import io
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import vobject
from radicale import item as radicale_item
from radicale import storage as radicale_storage

#: What the cache may hold, in bytes of pickles (a typical event pickles to 1-4 kB).
DEFAULT_BUDGET = 48 * 1024 * 1024


class _Pickler(pickle.Pickler):
    """Pickles time zones by reference: every copy shares the zone of the first parse, and with it the
    transitions dateutil has already worked out (recomputing them from 1970 on is what a conversion costs)."""

    def __init__(self, file: io.BytesIO, zones: dict[int, datetime.tzinfo]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.zones = zones

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, datetime.tzinfo):
            self.zones.setdefault(id(obj), obj)
            return id(obj)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, zones: dict[int, datetime.tzinfo]) -> None:
        super().__init__(file)
        self.zones = zones

    def persistent_load(self, pid: Any) -> Any:
        return self.zones[pid]


class ParsedCache:
    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        #: The zones the pickles refer to (kept as long as the process: a calendar uses a handful).
        self._zones: dict[int, datetime.tzinfo] = {}

    def parse(self, etag: str, text: str) -> vobject.base.Component:
        """A fresh parsed component of ``text`` (whose ETag is ``etag``)."""
        with self._lock:
            data = self._entries.get(etag)
            if data is not None:
                self._entries.move_to_end(etag)
        if data is not None:
            return _Unpickler(io.BytesIO(data), self._zones).load()
        component = vobject.readOne(text)
        try:
            buffer = io.BytesIO()
            with self._lock:
                _Pickler(buffer, self._zones).dump(component)
            data = buffer.getvalue()
        except Exception:  # something vobject made that does not pickle: parse it every time
            return component
        with self._lock:
            if etag not in self._entries and len(data) <= self.budget:
                self._entries[etag] = data
                self._size += len(data)
                while self._size > self.budget:
                    _, dropped = self._entries.popitem(last=False)
                    self._size -= len(dropped)
        return component

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._zones.clear()
            self._size = 0


CACHE = ParsedCache()


class Texts:
    """The texts of a batch of items read without them, read all at once when one of them is first needed.

    A PROPFIND asks for ETags, content types and resource types: what the row's other columns say. Reading the
    text of every item only to drop it costs time and, at 100,000 items, most of the answer's memory. A batch
    needs its texts for a PROPFIND ``allprop`` (content lengths), a GET of the whole collection or the relay's
    full reads; then they are read in one pass, inside the request's transaction when there is one (a
    snapshot: the texts are those of the ETags read). Radicale builds a PROPFIND's answer after leaving its
    lock; an item that changed meanwhile then gets its current text (what a request a moment later would have
    read) and one deleted meanwhile raises :class:`ComponentNotFoundError`.
    """

    def __init__(self, read: Callable[[list[str]], Iterable[tuple[str, str]]]) -> None:
        #: ``read(hrefs)`` yields (href, text) of those of ``hrefs`` that exist.
        self._read = read
        self._hrefs: list[str] = []
        self._found: dict[str, str] | None = None

    def add(self, href: str) -> None:
        self._hrefs.append(href)

    def text(self, href: str) -> str:
        """The text of ``href`` (one of the batch), after reading those of the whole batch."""
        if self._found is None:
            self._found = dict(self._read(self._hrefs))
            self._hrefs = []
        if href not in self._found:
            raise radicale_storage.ComponentNotFoundError(href)
        return self._found[href]


class Item(radicale_item.Item):
    """A stored item whose parsed form comes from :data:`CACHE`, and whose text may come later (:class:`Texts`)."""

    _texts: Texts | None = None

    @classmethod
    def stored(cls, collection: radicale_storage.BaseCollection, href: str, etag: str, uid: str, name: str,
               component_name: str, time_range: tuple[int, int], last_modified: str, text: str | None = None,
               texts: Texts | None = None) -> Item:
        """An item of ``collection`` as its row describes it, with its ``text`` or a batch that reads it.

        Made without the base class's constructor: its only work beyond setting the fields is an assertion
        that the collection's path is sanitized (it is: it comes from the database), which re-sanitizes the
        path twice per item, more than reading the row costs. The fields are set in the base class's order.
        """
        item = cls.__new__(cls)
        item._collection_path = collection.path
        item.collection = collection
        item.href = href
        item.last_modified = last_modified
        item._text = text
        item._vobject_item = None
        item._etag = etag
        item._uid = uid
        item._name = name
        item._component_name = component_name
        item._time_range = time_range
        if text is None:
            assert texts is not None
            item._texts = texts
            texts.add(href)
        return item

    def serialize(self) -> str:
        if self._text is None and self._texts is not None:
            assert self.href is not None
            self._text = self._texts.text(self.href)
        return super().serialize()

    @property
    def vobject_item(self):
        if self._vobject_item is None:
            text = self.serialize()
            try:
                self._vobject_item = CACHE.parse(self.etag, text)
            except Exception as e:
                raise RuntimeError(f"Failed to parse item {self.href!r} from {self._collection_path!r}: {e}") from e
        return self._vobject_item
