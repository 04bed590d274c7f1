"""Availability for one user: read the user's calendars through the instance index and apply the policy.

:class:`AvailabilityService` is blocking (it may read storage) and is meant to run in the engine's thread
pool; everything after the read is pure and lives in :mod:`.intervals`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from proxy.availability.index import AvailabilityIndex, IndexStore
from proxy.availability.instances import Disposition, Instance
from proxy.availability.intervals import BusyInterval, busy_intervals, free_slots, reasons_at
from proxy.availability.sources import SourceFreshness, SourceStatus, source_status
from proxy.model import MIRROR_BLOCKS_PROP, SCHEDULE_TRANSP_PROP

log = logging.getLogger(__name__)


class CalendarLike(Protocol):
    path: str
    props: Mapping[str, str]
    etag: str


class CalendarStore(IndexStore, Protocol):
    """What the service needs from storage (the engine provides it)."""

    def list_calendars(self, user: str) -> Sequence[CalendarLike]: ...


@dataclass(frozen=True)
class UserView:
    """Who is asking about whom: the zone for floating/all-day values and the user's own addresses."""

    user: str
    zone: ZoneInfo
    addresses: frozenset[str]  # normalized, see instances.normalize_address


@dataclass(frozen=True)
class Freshness:
    """Relay information and the staleness policy, fixed for one answer."""

    now: datetime
    stale_after: timedelta
    by_path: Mapping[str, SourceFreshness]
    relay_present: bool
    #: the relay's sync window [start, end): iCloud events outside it are not mirrored (None: unknown)
    synced: tuple[datetime, datetime] | None = None


@dataclass(frozen=True)
class Snapshot:
    """The user's calendars and every instance overlapping the window, whatever its disposition."""

    sources: list[SourceStatus]
    problems: dict[str, dict[str, str]]  # collection path -> item href -> why it could not be read
    instances: list[Instance]

    @property
    def stale_paths(self) -> frozenset[str]:
        return frozenset(source.path for source in self.sources if source.stale)


@dataclass(frozen=True)
class AvailabilityAnswer:
    start: datetime
    end: datetime
    busy: list[BusyInterval]
    free_events: list[Instance]  # TRANSP:TRANSPARENT instances: shown, never blocking
    slots: list[tuple[datetime, datetime]] | None
    snapshot: Snapshot


@dataclass(frozen=True)
class ReasonsAnswer:
    at: datetime
    busy: bool
    reasons: list[tuple[Instance, Disposition]]
    snapshot: Snapshot


class AvailabilityService:
    def __init__(self, store: CalendarStore, index: AvailabilityIndex | None = None) -> None:
        self.store = store
        self.index = index or AvailabilityIndex()

    def snapshot(
        self,
        view: UserView,
        start: datetime,
        end: datetime,
        freshness: Freshness,
        paths: frozenset[str] | None = None,
    ) -> Snapshot:
        """Read the user's calendars (only ``paths`` if given) and collect the instances over [start, end).

        Raises :class:`~proxy.availability.index.BudgetExceeded` when that needs more than one request's work."""
        with self.index.budget():
            return self._snapshot(view, start, end, freshness, paths)

    def _snapshot(
        self,
        view: UserView,
        start: datetime,
        end: datetime,
        freshness: Freshness,
        paths: frozenset[str] | None,
    ) -> Snapshot:
        calendars = sorted(
            (c for c in self.store.list_calendars(view.user) if paths is None or c.path in paths),
            key=lambda c: c.path,
        )
        found = self.index.instances(self.store, [c.path for c in calendars], start, end, view.zone)
        sources: list[SourceStatus] = []
        instances: list[Instance] = []
        for calendar in calendars:
            of_calendar = found.instances.get(calendar.path, [])
            # A mirror excluded from blocking, or a calendar marked transparent (RFC 6638 §9.1), never blocks.
            transparent = calendar.props.get(SCHEDULE_TRANSP_PROP) == "transparent"
            if calendar.props.get(MIRROR_BLOCKS_PROP) == "false" or transparent:
                of_calendar = [dataclasses.replace(i, from_blocking_calendar=False) for i in of_calendar]
            instances.extend(of_calendar)
            sources.append(
                source_status(
                    calendar.path,
                    calendar.props,
                    freshness.by_path.get(calendar.path),
                    freshness.relay_present,
                    freshness.now,
                    freshness.stale_after,
                    beyond_window=freshness.synced is not None
                    and (start < freshness.synced[0] or end > freshness.synced[1]),
                )
            )
        problems = {path: dict(found.problems[path]) for path in sorted(found.problems)}
        return Snapshot(sources, problems, instances)

    def availability(
        self,
        view: UserView,
        start: datetime,
        end: datetime,
        freshness: Freshness,
        slot: timedelta | None = None,
        paths: frozenset[str] | None = None,
    ) -> AvailabilityAnswer:
        snapshot = self.snapshot(view, start, end, freshness, paths)
        busy = busy_intervals(snapshot.instances, start, end, view.addresses)
        free_events = sorted(
            (i for i in snapshot.instances if i.disposition(view.addresses) is Disposition.FREE),
            key=lambda i: (i.start, i.calendar, i.uid),
        )
        slots = None if slot is None else free_slots(busy, start, end, slot, view.zone)
        return AvailabilityAnswer(start, end, busy, free_events, slots, snapshot)

    def reasons(self, view: UserView, at: datetime, freshness: Freshness) -> ReasonsAnswer:
        # A window of one microsecond holds exactly the instances that contain ``at``.
        snapshot = self.snapshot(view, at, at + timedelta(microseconds=1), freshness)
        found = [(i, i.disposition(view.addresses)) for i in reasons_at(snapshot.instances, at)]
        found.sort(key=lambda pair: pair[1] is not Disposition.BUSY)  # blocking reasons first; stable
        busy = any(disposition is Disposition.BUSY for _, disposition in found)
        return ReasonsAnswer(at, busy, found, snapshot)
