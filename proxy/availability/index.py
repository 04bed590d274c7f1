"""The in-memory availability index: parsed items and their expansions, reused while nothing changes.

Layers, each invalidated by its own ETag:

* a user's calendar whose collection ETag is unchanged is not read from storage at all;
* inside a changed collection, an item whose (href, ETag) is unchanged is not re-parsed, and keeps its
  cached expansions;
* non-recurring items are expanded once, at parse time, into one sorted list per collection;
* recurring items are expanded per fixed *bucket* of time (28 days, aligned on the epoch) on first use; a
  query only looks at the instances that start in the buckets it spans (plus a look-back for long events).

An instance is stored in the bucket where it starts, so nothing is counted twice when a query spans buckets.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo

from proxy import stopping
from proxy.availability.instances import DEFAULT_MAX_INSTANCES, Instance, ParsedItem

log = logging.getLogger(__name__)

BUCKET = timedelta(days=28)
_EPOCH = datetime(1970, 1, 5, tzinfo=UTC)  # a Monday, so buckets start on week boundaries
#: How often a request waiting for another's work on the same collection looks whether it was stopped.
_LOCK_POLL_SECONDS = 0.2
#: Expanded buckets kept per item and per collection; a year's queries need 14.
MAX_BUCKETS = 40


class BudgetExceeded(Exception):
    """One request asked for more expansion work than its budget (``limits.request_*``)."""


@dataclass
class Budget:
    """What one request may still spend on expanding: instances and wall-clock time. Checked between buckets,
    so that a request stops computing once it is over budget, whoever is waiting for it. The clock starts at
    the first expansion: parsing a cold calendar is done once per ETag and kept, however long it takes."""

    seconds: float
    instances_left: int
    deadline: float | None = None

    def charge(self, instances: int) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.seconds
        self.instances_left -= instances
        if self.instances_left < 0:
            raise BudgetExceeded(
                "the query needs more expansion work than one request may do (limits.request_instances): "
                "ask for a shorter window"
            )
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(
                "the query took longer than one request may (limits.request_seconds): ask for a shorter window"
            )


_budget: ContextVar[Budget | None] = ContextVar("calrelay_expansion_budget", default=None)


def _charge(instances: int) -> None:
    stopping.check()  # between two buckets: where a request whose client went away stops expanding
    budget = _budget.get()
    if budget is not None:
        budget.charge(instances)


class StoredItemLike(Protocol):
    href: str
    etag: str
    text: str


def bucket_of(at: datetime) -> int:
    return (at - _EPOCH) // BUCKET


def bucket_start(number: int) -> datetime:
    return _EPOCH + number * BUCKET


class _SortedInstances:
    """Instances sorted by start, searchable for those overlapping a window."""

    def __init__(self, instances: Iterable[Instance]) -> None:
        self.instances = sorted(instances, key=lambda i: i.start)
        self.starts = [i.start for i in self.instances]

    def starting_in(self, start: datetime, end: datetime) -> Sequence[Instance]:
        return self.instances[bisect_left(self.starts, start) : bisect_left(self.starts, end)]


K = TypeVar("K")
V = TypeVar("V")


class _LRU(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[K, V] = OrderedDict()

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        value = self._data[key] = make()
        if len(self._data) > self._size:
            self._data.popitem(last=False)
        return value


class ItemIndex:
    """One parsed item of one ETag, with its expansions per bucket."""

    def __init__(self, parsed: ParsedItem, etag: str) -> None:
        self.parsed = parsed
        self.etag = etag
        self._buckets: _LRU[int, tuple[Instance, ...]] = _LRU(MAX_BUCKETS)

    def starting_in_bucket(self, number: int) -> tuple[Instance, ...]:
        fresh: list[int] = []

        def expand() -> tuple[Instance, ...]:
            start, end = bucket_start(number), bucket_start(number + 1)
            found = tuple(i for i in self.parsed.expand(start, end) if start <= i.start < end)
            fresh.append(len(found))
            return found

        found = self._buckets.get_or_make(number, expand)
        if fresh:  # charged once kept, so that a request over budget still leaves progress for the next
            _charge(fresh[0])
        return found


@dataclass
class CollectionIndex:
    """All items of one collection at one collection ETag, for one user zone."""

    path: str
    etag: str
    items: dict[str, ItemIndex]
    #: Items that could not be parsed (href → error): reported with the source, never silently dropped.
    problems: dict[str, str]
    fixed: _SortedInstances = field(init=False)
    fixed_lookback: timedelta = field(init=False)
    recurring: list[ItemIndex] = field(init=False)
    recurring_lookback: timedelta = field(init=False)
    _buckets: _LRU[int, _SortedInstances] = field(init=False)

    def __post_init__(self) -> None:
        fixed_items = [item for item in self.items.values() if not item.parsed.recurring]
        self.fixed = _SortedInstances(i for item in fixed_items for i in item.parsed.fixed)
        self.fixed_lookback = max((item.parsed.max_length for item in fixed_items), default=timedelta(0))
        self.recurring = [item for item in self.items.values() if item.parsed.recurring]
        self.recurring_lookback = max(
            (item.parsed.max_length for item in self.recurring), default=timedelta(0)
        )
        self._buckets = _LRU(MAX_BUCKETS)

    def _bucket(self, number: int) -> _SortedInstances:
        def gather() -> _SortedInstances:
            return _SortedInstances(i for item in self.recurring for i in item.starting_in_bucket(number))

        return self._buckets.get_or_make(number, gather)

    def instances(self, start: datetime, end: datetime) -> list[Instance]:
        """Every instance overlapping [start, end), whatever its disposition."""
        found = [i for i in self.fixed.starting_in(start - self.fixed_lookback, end) if i.end > start]
        if self.recurring:
            earliest = start - self.recurring_lookback
            for number in range(bucket_of(earliest), bucket_of(end) + 1):
                found.extend(i for i in self._bucket(number).starting_in(earliest, end) if i.end > start)
        return found


class AvailabilityIndex:
    """Collection indexes keyed by (collection path, user zone), refreshed from storage by ETag.

    Thread-safe: queries run in the engine's thread pool, several at a time. Work on one collection (reading,
    parsing, expanding) is serialized by a lock per collection path, so a cold calendar does not hold up the
    others; the shared lock only guards the dictionaries.
    """

    def __init__(
        self,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        request_instances: int = 2_000_000,
        request_seconds: float = 10.0,
    ) -> None:
        self.max_instances = max_instances
        self.request_instances = request_instances
        self.request_seconds = request_seconds
        self._collections: dict[tuple[str, str], CollectionIndex] = {}
        self._path_locks: dict[str, threading.Lock] = {}
        #: Items parsed by a request that stopped before its collection's index was complete, kept for the next.
        self._spare: dict[tuple[str, str], dict[str, ItemIndex]] = {}
        self._lock = threading.Lock()
        #: Counters for tests and logs: how much work the cache saved or did.
        self.parsed_items = 0
        self.collection_reads = 0

    def _path_lock(self, path: str) -> threading.Lock:
        with self._lock:
            return self._path_locks.setdefault(path, threading.Lock())

    @contextmanager
    def _holding(self, path: str) -> Iterator[None]:
        """The collection's lock; a request stopped while it waits for another's work gives up waiting."""
        lock = self._path_lock(path)
        while not lock.acquire(timeout=_LOCK_POLL_SECONDS):
            stopping.check()
        try:
            yield
        finally:
            lock.release()

    def collection(
        self,
        path: str,
        etag: str,
        zone: ZoneInfo,
        read_items: Callable[[str], Sequence[StoredItemLike]],
    ) -> CollectionIndex:
        """The index of ``path`` at collection ETag ``etag``; ``read_items`` is called only if it changed."""
        key = (path, zone.key)
        with self._holding(path):
            current = self._collections.get(key)
            if current is not None and current.etag == etag:
                return current
            index = self._build(path, etag, zone, read_items(path), current.items if current else {})
            with self._lock:
                self.collection_reads += 1
                self._collections[key] = index
            return index

    def _build(
        self,
        path: str,
        etag: str,
        zone: ZoneInfo,
        stored: Sequence[StoredItemLike],
        previous: dict[str, ItemIndex],
    ) -> CollectionIndex:
        items: dict[str, ItemIndex] = {}
        problems: dict[str, str] = {}
        with self._lock:  # what a stopped request parsed of this collection
            spare = self._spare.pop((path, zone.key), {})
        for item in stored:
            known = previous.get(item.href) or spare.get(item.href)
            if known is not None and known.etag == item.etag:
                items[item.href] = known
                continue
            try:
                stopping.check()  # between two items: a cold calendar of thousands takes seconds
            except stopping.RequestStopped:
                with self._lock:
                    self._spare[(path, zone.key)] = {**spare, **items}
                raise
            try:
                items[item.href] = ItemIndex(
                    ParsedItem(item.text, path, item.href, zone, self.max_instances), item.etag
                )
            except Exception as exc:  # a corrupt item must be visible, not abort the whole answer
                log.warning("cannot index %s%s for availability: %s", path, item.href, exc)
                problems[item.href] = str(exc) or type(exc).__name__
                continue
            self.parsed_items += 1
        return CollectionIndex(path, etag, items, problems)

    @contextmanager
    def budget(self) -> Iterator[Budget]:
        """Bound the expansion done inside (one request's): raises :class:`BudgetExceeded` past it."""
        budget = Budget(self.request_seconds, self.request_instances)
        token = _budget.set(budget)
        try:
            yield budget
        finally:
            _budget.reset(token)

    def query(self, index: CollectionIndex, start: datetime, end: datetime) -> list[Instance]:
        # Expanding a bucket mutates the collection's and its items' caches.
        with self._holding(index.path):
            return index.instances(start, end)

    def retain(self, prefix: str, keep: Iterable[str]) -> None:
        """Drop indexes of collections under ``prefix`` (a user's home) that are not in ``keep`` (deleted)."""
        kept = set(keep)
        with self._lock:
            stale = [key for key in self._collections if key[0].startswith(prefix) and key[0] not in kept]
            for key in stale:
                del self._collections[key]
                self._path_locks.pop(key[0], None)
            for key in [key for key in self._spare if key[0].startswith(prefix) and key[0] not in kept]:
                del self._spare[key]
