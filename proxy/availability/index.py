"""Availability's instances, read from the SQL storage's instance index: nothing to warm up after a restart,
and every calrelay process on one database reads the same index.

One request window costs one read transaction (``plugins.sqlstore.busy``): the index rows of the user's
calendars that may meet the window, and the few events the index does not list there (a series past the
horizon or the per-event cap, an event beyond the horizon). Rows are placed in the user's zone here (floating
times and dates are stored as UTC readings of the wall clock); the unlisted events are parsed (kept per ETag
and zone, least recently used first out) and expanded per 28-day bucket as before the index existed, so a
rule denser than ``limits.max_instances`` in a bucket still becomes a "too many instances" stand-in.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from proxy import stopping
from proxy.availability.instances import DEFAULT_MAX_INSTANCES, Instance, ParsedItem
from proxy.model import EventKind, Origin

log = logging.getLogger(__name__)

BUCKET = timedelta(days=28)
_EPOCH = datetime(1970, 1, 5, tzinfo=UTC)  # a Monday, so buckets start on week boundaries
#: Index rows placed in a zone between two stop checks.
_ROWS_PER_CHECK = 2000
#: Parsed events the index does not list (series past the horizon or the cap), kept for the next request.
PARSED_CACHE_SIZE = 512


class BudgetExceeded(Exception):
    """One request asked for more work than its budget (``limits.request_*``)."""


@dataclass
class Budget:
    """What one request may still spend: instances read or expanded, and wall-clock time. Checked between
    batches of rows and between buckets, so that a request stops computing once it is over budget. The clock
    starts at the first charge: parsing an event the index does not list is done once per ETag and kept."""

    seconds: float
    instances_left: int
    deadline: float | None = None

    def charge(self, instances: int) -> None:
        first = self.deadline is None
        if self.deadline is None:  # the clock starts now: the first charge never runs out of time
            self.deadline = time.monotonic() + self.seconds
        self.instances_left -= instances
        if self.instances_left < 0:
            raise BudgetExceeded(
                "the query needs more expansion work than one request may do (limits.request_instances): "
                "ask for a shorter window"
            )
        if not first and time.monotonic() > self.deadline:
            raise BudgetExceeded(
                "the query took longer than one request may (limits.request_seconds): ask for a shorter window"
            )


_budget: ContextVar[Budget | None] = ContextVar("calrelay_expansion_budget", default=None)


def _charge(instances: int) -> None:
    stopping.check()  # between two batches or buckets: where a request whose client went away stops
    budget = _budget.get()
    if budget is not None:
        budget.charge(instances)


class UnlistedItem(Protocol):
    path: str
    href: str
    etag: str
    text: str


@dataclass(frozen=True)
class IndexRead:
    """What one window's read transaction returned (``plugins.sqlstore.busy``)."""

    rows: Sequence[Any]  # candidate rows of the instance index
    unlisted: Sequence[UnlistedItem]  # events whose instances there the index does not list


class IndexStore(Protocol):
    def read_instances(self, paths: Sequence[str], start: int, end: int) -> IndexRead: ...


def bucket_of(at: datetime) -> int:
    return (at - _EPOCH) // BUCKET


def bucket_start(number: int) -> datetime:
    return _EPOCH + number * BUCKET


#: The enums of the index's text columns, looked up rather than constructed (a year's window has 100,000s).
_KINDS = {kind.value: kind for kind in EventKind}
_ORIGINS = {origin.value: origin for origin in Origin}


def _placed(seconds: int, floating: bool, zone: ZoneInfo) -> datetime:
    """An index instant as aware UTC; a floating one is a UTC reading of the wall clock in ``zone``."""
    value = datetime.fromtimestamp(seconds, UTC)
    return value.replace(tzinfo=zone).astimezone(UTC) if floating else value


_NO_ONE: frozenset[str] = frozenset()


def instance_of_row(row: Any, zone: ZoneInfo) -> Instance:
    """The instance an index row describes, placed in ``zone`` (what ``instances.instance_of`` makes of the
    VEVENT the row was expanded from). A year's window reads 100,000s of rows: what can be shared is."""
    starts = row.busy_start + row.travel
    start = _placed(starts, row.floating, zone)
    if row.recurrence_id is None:
        recurrence_id = None
    else:  # most occurrences are where their rule put them
        recurrence_id = start if row.recurrence_id == starts else _placed(row.recurrence_id, row.floating, zone)
    return Instance(
        calendar=_calendar_path(row.path),
        href=row.href,
        uid=row.uid,
        recurrence_id=recurrence_id,
        summary=row.summary,
        kind=_KINDS[row.kind],
        origin=_ORIGINS[row.origin],
        start=start - timedelta(seconds=row.travel) if row.travel else start,
        end=_placed(row.busy_end, row.floating, zone),
        all_day=row.all_day,
        transparent=row.transparent,
        cancelled=row.status == "CANCELLED",
        declined_by=frozenset(row.declined.split("\n")) if row.declined else _NO_ONE,
        policy=row.policy or "",
    )


@functools.lru_cache(maxsize=4096)
def _calendar_path(stored: str) -> str:
    return f"/{stored}/"


@dataclass
class Found:
    """Every instance of some calendars overlapping a window, and the events that could not be read."""

    instances: dict[str, list[Instance]] = field(default_factory=dict)  # calendar path -> instances
    problems: dict[str, dict[str, str]] = field(default_factory=dict)  # calendar path -> href -> why


class AvailabilityIndex:
    """Reads a window's instances through an :class:`IndexStore`, within one request's budget.

    Thread-safe: queries run in the engine's thread pool, several at a time; the lock only guards the cache.
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
        self._parsed: OrderedDict[tuple[str, str, str, str], ParsedItem] = OrderedDict()
        self._lock = threading.Lock()
        #: Counters for tests and logs: events parsed (those the index does not list), the buckets of them
        #: expanded, and index rows read.
        self.parsed_items = 0
        self.buckets_expanded = 0
        self.rows_read = 0

    @contextmanager
    def budget(self) -> Iterator[Budget]:
        """Bound the work done inside (one request's): raises :class:`BudgetExceeded` past it."""
        budget = Budget(self.request_seconds, self.request_instances)
        token = _budget.set(budget)
        try:
            yield budget
        finally:
            _budget.reset(token)

    def instances(
        self, store: IndexStore, paths: Sequence[str], start: datetime, end: datetime, zone: ZoneInfo
    ) -> Found:
        """Every instance of the calendars at ``paths`` overlapping [start, end), whatever its disposition."""
        read = store.read_instances(paths, int(start.timestamp()), int(end.timestamp()) + 1)
        found = Found({path: [] for path in paths})
        for first in range(0, len(read.rows), _ROWS_PER_CHECK):
            rows = read.rows[first:first + _ROWS_PER_CHECK]
            _charge(len(rows))
            for row in rows:
                instance = instance_of_row(row, zone)
                # A zero-length instance contains no instant, so it can neither block nor explain a busy one.
                if instance.end > instance.start and instance.overlaps(start, end):
                    found.instances.setdefault(instance.calendar, []).append(instance)
        with self._lock:
            self.rows_read += len(read.rows)
        for item in read.unlisted:
            calendar = f"/{item.path}/"
            parsed = self._parse(calendar, item, zone)
            if isinstance(parsed, str):
                found.problems.setdefault(calendar, {})[item.href] = parsed
                continue
            try:
                found.instances.setdefault(calendar, []).extend(self._expand(parsed, start, end))
            except (BudgetExceeded, stopping.RequestStopped):
                raise
            except Exception as exc:  # a rule recurring-ical-events cannot follow: visible, not a 500
                log.warning("cannot expand %s%s for availability: %s", calendar, item.href, exc)
                found.problems.setdefault(calendar, {})[item.href] = str(exc) or type(exc).__name__
        return found

    def _parse(self, calendar: str, item: UnlistedItem, zone: ZoneInfo) -> ParsedItem | str:
        """The parsed event, or why it cannot be parsed."""
        key = (calendar, item.href, item.etag, zone.key)
        with self._lock:
            parsed = self._parsed.get(key)
            if parsed is not None:
                self._parsed.move_to_end(key)
                return parsed
        stopping.check()  # between two events: parsing one takes milliseconds
        try:
            parsed = ParsedItem(item.text, calendar, item.href, zone, self.max_instances)
        except Exception as exc:  # a corrupt item must be visible, not abort the whole answer
            log.warning("cannot read %s%s for availability: %s", calendar, item.href, exc)
            return str(exc) or type(exc).__name__
        with self._lock:
            self.parsed_items += 1
            self._parsed[key] = parsed
            while len(self._parsed) > PARSED_CACHE_SIZE:
                self._parsed.popitem(last=False)
        return parsed

    def _expand(self, parsed: ParsedItem, start: datetime, end: datetime) -> list[Instance]:
        """The event's instances overlapping [start, end), expanded per bucket: the cap on instances is one
        bucket's, whatever the window (an instance belongs to the bucket it starts in)."""
        found: list[Instance] = []
        for number in range(bucket_of(start - parsed.max_length), bucket_of(end) + 1):
            first, last = bucket_start(number), bucket_start(number + 1)
            expanded = [i for i in parsed.expand(first, last) if first <= i.start < last]
            with self._lock:
                self.buckets_expanded += 1
            _charge(len(expanded))
            found.extend(i for i in expanded if i.overlaps(start, end))
        return found
