"""Radicale's expansion of an answer (calendar-query or multiget with ``expand``), once per object version and
range, keeping only the instances that meet the range.

Radicale's REPORT handler expands each answer once per requested property (``getetag`` and ``calendar-data``:
twice), each time copying the parsed object, rewriting every instance's properties and serializing the result:
milliseconds per answer, most of an expanding query's time. The expansion depends on nothing but the object's
text (its ETag is a digest of it) and the arguments, so :func:`install` wraps Radicale's ``_expand`` with a
cache of its results keyed by both, bounded in bytes: the second property of an answer, and the next query of
the same range (a client polling its week), reuse it.

Radicale's expansion is wrong in three cases, which the first expansion of an object corrects (RFC 4791 §9.9:
an instance is returned when it overlaps the range): of a series it keeps an instance whose override moved it
out of the time range, and one that starts exactly at the range's end (it tests the recurrence, not the
instance, with an inclusive end): each instance is checked and those dropped; and it drops a single event
without DTEND or DURATION that starts in the range (it gives it no length): such an event is returned as
Radicale returns any other single event. Otherwise the answer is Radicale's, byte for byte.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Hashable
from datetime import UTC, date, datetime, timedelta

import vobject
from radicale import item as radicale_item
from radicale.app import report

#: What the cache may hold, in characters of expanded text.
DEFAULT_BUDGET = 16 * 1024 * 1024

#: Radicale's own expansion (before :func:`install`).
radicale_expand = report._expand


class ExpansionCache:
    """Expanded texts and their instance counts, least recently used out beyond ``budget`` characters."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self._entries: OrderedDict[Hashable, tuple[str, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[str, int] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: Hashable, value: tuple[str, int]) -> None:
        size = len(value[0]) + 100  # the key and the tuple
        with self._lock:
            if key in self._entries or size > self.budget:
                return
            self._entries[key] = value
            self._size += size
            while self._size > self.budget:
                _, (dropped, _) = self._entries.popitem(last=False)
                self._size -= len(dropped) + 100

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._size = 0


CACHE = ExpansionCache()


def _utc(value: date | datetime) -> datetime:
    """An instant as Radicale's time-range test reads it: floating times and dates as UTC."""
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _meets(vevent: vobject.base.Component, start: datetime, end: datetime) -> bool:
    """RFC 4791 §9.9: the instance ``vevent`` overlaps [start, end)."""
    first = vevent.dtstart.value
    if hasattr(vevent, "dtend"):
        last = vevent.dtend.value
    elif hasattr(vevent, "duration"):
        last = first + vevent.duration.value
    elif isinstance(first, datetime):
        return start <= _utc(first) < end
    else:
        last = first + timedelta(days=1)
    return _utc(first) < end and _utc(last) > start


def _all_start_within(text: str, count: int, start: datetime, end: datetime) -> bool:
    """Every instance of Radicale's expansion of a series starts in [start, end), and so meets it: read from
    the text, where Radicale writes every instance's DTSTART in UTC (or as a date), saving a parse."""
    starts = [line.partition(":")[2] for line in text.splitlines() if line.startswith("DTSTART")]
    if len(starts) != count:
        return False
    try:
        instants = [_utc(datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value))
                    for value in starts]
    except ValueError:
        return False
    return all(start <= instant < end for instant in instants)


def meeting_only(text: str, count: int, start: datetime, end: datetime) -> tuple[str, int]:
    """An expanded object without its instances that do not overlap [start, end), and how many are left."""
    start, end = _utc(start), _utc(end)
    if _all_start_within(text, count, start, end):
        return text, count
    component = vobject.readOne(text)
    instances = component.vevent_list
    kept = [vevent for vevent in instances if _meets(vevent, start, end)]
    if len(kept) == len(instances):
        return text, len(kept)
    if not kept:
        return "", 0
    component.vevent_list = kept
    return component.serialize(), len(kept)


def _is_series(item: radicale_item.Item) -> bool:
    text = item.serialize()
    return "RRULE" in text or "RDATE" in text


def in_range(item: radicale_item.Item, text: str, count: int, start: datetime, end: datetime) -> tuple[str, int]:
    """Radicale's expansion (``text``, ``count``) of ``item`` over the time range [start, end), corrected."""
    if _is_series(item):
        return meeting_only(text, count, start, end) if count else (text, count)
    if count == 0:  # Radicale gives an event without DTEND or DURATION no length, and misses it at the start
        component = vobject.readOne(item.serialize())
        events = component.contents.get("vevent", [])
        if len(events) == 1 and not hasattr(events[0], "recurrence_id") and _meets(events[0], start, end):
            return component.serialize(), 1
    return text, count


#: Properties whose floating values :func:`floating_as_utc` reads as UTC.
_TIMES = ("dtstart", "dtend", "recurrence_id", "exdate", "rdate")


#: A DTSTART in floating time (no zone, no Z, not a date): only such objects are parsed again.
_FLOATING_START = re.compile(r"^DTSTART(?:;VALUE=DATE-TIME)?:\d{8}T\d{6}\r?$", re.MULTILINE)


def _floating(value: object) -> bool:
    return isinstance(value, datetime) and value.tzinfo is None


def floating_as_utc(item: radicale_item.Item) -> radicale_item.Item | None:
    """A copy of ``item`` whose floating times are UTC, when it has any; else None.

    Radicale's expansion compares the rule's instances with the range, and a floating series (local time
    without a zone, RFC 5545 §3.3.5) gives naive instances it cannot compare (a TypeError, answered 500).
    Read as UTC, as Radicale's time-range test reads floating times (and as the instance index does), the
    series expands; the instances are written in UTC like every expanded instance."""
    component = vobject.readOne(item.serialize())  # a copy: the item's parse is shared by the parse cache
    changed = False
    for vevent in component.contents.get("vevent", []):
        for name in _TIMES:
            for line in vevent.contents.get(name.replace("_", "-"), []):
                values = line.value if isinstance(line.value, list) else [line.value]
                if not any(_floating(value) for value in values):
                    continue
                fixed = [value.replace(tzinfo=UTC) if _floating(value) else value for value in values]
                line.value = fixed if isinstance(line.value, list) else fixed[0]
                changed = True
    if not changed:
        return None
    return radicale_item.Item(collection=item.collection, href=item.href, vobject_item=component)


def expand(element: ET.Element, item: radicale_item.Item, start: datetime, end: datetime,
           time_range_start: datetime | None = None, time_range_end: datetime | None = None,
           max_occurrence: int = 0) -> tuple[ET.Element, int]:
    """Radicale's ``_expand`` (same arguments, same result), for items of this storage through :data:`CACHE`."""
    from plugins.sqlstore.collection import Collection

    if not isinstance(item.collection, Collection):  # another storage's item: its ETag may not be a digest
        return radicale_expand(element, item, start, end, time_range_start, time_range_end, max_occurrence)
    key = (item.etag, start, end, time_range_start, time_range_end, max_occurrence)
    found = CACHE.get(key)
    if found is None:
        text = item.serialize()
        zoned = floating_as_utc(item) if "RRULE" in text and _FLOATING_START.search(text) else None
        element, count = radicale_expand(element, zoned or item, start, end, time_range_start, time_range_end,
                                         max_occurrence)
        found = (element.text or "", count)
        if time_range_start is not None and time_range_end is not None:
            found = in_range(item, *found, time_range_start, time_range_end)
        CACHE.put(key, found)
    element.text = found[0]
    return element, found[1]


def install() -> None:
    """Put :func:`expand` in the place of Radicale's ``_expand`` (``xml_report`` looks it up at every call)."""
    report._expand = expand
