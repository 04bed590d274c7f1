"""Interval arithmetic over instances: merged busy time, free slots, the reasons for one instant (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from proxy.availability.instances import Disposition, Instance


@dataclass(frozen=True, slots=True)
class BusyInterval:
    """A maximal busy stretch inside the query window and the instances that make it busy."""

    start: datetime
    end: datetime
    sources: tuple[Instance, ...]


def busy_intervals(
    instances: Iterable[Instance], start: datetime, end: datetime, addresses: frozenset[str]
) -> list[BusyInterval]:
    """Merge the blocking instances overlapping [start, end) into disjoint intervals clipped to the window.

    Touching intervals (one ends where the next begins) are merged: there is no free instant between them.
    """
    blocking = sorted(
        (i for i in instances if i.overlaps(start, end) and i.disposition(addresses) is Disposition.BUSY),
        key=lambda i: (i.start, i.end),
    )
    merged: list[BusyInterval] = []
    current_start: datetime | None = None
    current_end = start
    sources: list[Instance] = []
    for instance in blocking:
        if current_start is not None and instance.start <= current_end:
            current_end = max(current_end, instance.end)
            sources.append(instance)
            continue
        if current_start is not None:
            merged.append(BusyInterval(current_start, min(current_end, end), tuple(sources)))
        current_start, current_end, sources = max(instance.start, start), instance.end, [instance]
    if current_start is not None:
        merged.append(BusyInterval(current_start, min(current_end, end), tuple(sources)))
    return merged


def _local_midnights(at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The local midnights that begin and end the user's day containing ``at`` (in ``at``'s tz)."""
    day = at.astimezone(zone).date()
    first = datetime.combine(day, time(), tzinfo=zone).astimezone(at.tzinfo)
    second = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone).astimezone(at.tzinfo)
    return first, second


def free_slots(
    busy: Iterable[BusyInterval], start: datetime, end: datetime, slot: timedelta, zone: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    """Non-overlapping free slots of length ``slot``, entirely inside [start, end) and outside ``busy``.

    Slot boundaries are a grid that restarts at every local midnight in the user's zone, so 30-minute slots
    fall on :00 and :30 whatever the window's start, and a length that does not divide a day does not drift.
    """
    gaps: list[tuple[datetime, datetime]] = []
    cursor = start
    for interval in busy:
        if interval.start > cursor:
            gaps.append((cursor, interval.start))
        cursor = max(cursor, interval.end)
    if cursor < end:
        gaps.append((cursor, end))
    slots: list[tuple[datetime, datetime]] = []
    for gap_start, gap_end in gaps:
        candidate = gap_start
        midnight, next_midnight = _local_midnights(candidate, zone)
        candidate = midnight - ((midnight - candidate) // slot) * slot  # first boundary at or after gap_start
        while candidate + slot <= gap_end:
            if candidate >= next_midnight:
                # A new local day: its grid starts again at its midnight.
                midnight, next_midnight = _local_midnights(candidate, zone)
                candidate = midnight - ((midnight - candidate) // slot) * slot
                continue
            slots.append((candidate, candidate + slot))
            candidate += slot
    return slots


def reasons_at(instances: Iterable[Instance], at: datetime) -> list[Instance]:
    """Every instance containing ``at``, whether or not it blocks, by start then calendar."""
    return sorted((i for i in instances if i.contains(at)), key=lambda i: (i.start, i.calendar, i.uid))
