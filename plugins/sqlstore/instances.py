"""Expanding an event into the rows of the instance index (pure: text in, rows out)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import icalendar
import recurring_ical_events

from proxy.availability.instances import describe, recurs

logger = logging.getLogger(__name__)

#: Floating times and dates mean local time, which lies within these offsets of UTC.
FLOATING_SLACK = 14 * 3600
#: An instance busy for longer than this is "long" (``long_busy``): a window finds the others by a look-back.
LONG_BUSY = 2 * 86400


@dataclass(frozen=True)
class Instance:
    start: int
    end: int
    floating: bool
    transparent: bool
    status: str
    #: What availability reads (the ``busy_*`` and following columns of ``dav_instances``):
    #: :meth:`Descriptions.busy_columns`.
    busy: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Expansion:
    instances: list[Instance]
    #: Every instance that starts before this instant is in ``instances``.
    complete_until: int


def _epoch(value: date | datetime) -> tuple[int, bool]:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return int(value.replace(tzinfo=UTC).timestamp()), True
        return int(value.timestamp()), False
    return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()), True


def _start(event: icalendar.Event) -> datetime:
    value = event["DTSTART"].dt
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Descriptions:
    """What each VEVENT of an object says about its instances (``proxy.availability.instances.describe``),
    worked out once per component rather than once per instance: an occurrence of an override is told by
    its RECURRENCE-ID, any other by the series' main component."""

    def __init__(self, originals: list[icalendar.Event]) -> None:
        self._by_recurrence = {_recurrence_key(event): describe(event) for event in originals}
        self._main = self._by_recurrence.get(None) or next(iter(self._by_recurrence.values()), None)
        #: The object is a series or holds overrides; else recurring-ical-events gives a lone event a
        #: RECURRENCE-ID of its own, which availability does not report.
        self.recurrence_ids = recurs(originals) or any("RECURRENCE-ID" in event for event in originals)

    def busy_columns(self, event: icalendar.Event, start: int, end: int) -> dict[str, Any]:
        """The instance index columns availability reads for one expanded VEVENT whose start and end (UTC
        readings if floating) are given: what ``instance_of`` makes of it, before it is placed in a zone."""
        about = self._by_recurrence.get(_recurrence_key(event)) or self._main or describe(event)
        travel = int(about.travel.total_seconds())
        recurrence_id = event.get("RECURRENCE-ID") if self.recurrence_ids else None
        return {
            "busy_start": start - travel, "busy_end": end, "long_busy": end - (start - travel) > LONG_BUSY,
            "travel": travel, "all_day": not isinstance(event["DTSTART"].dt, datetime),
            "recurrence_id": None if recurrence_id is None else _epoch(recurrence_id.dt)[0],
            "summary": about.summary, "kind": str(about.kind), "origin": str(about.origin),
            "policy": about.policy or None, "declined": "\n".join(sorted(about.declined_by)) or None,
        }


def _recurrence_key(event: icalendar.Event) -> date | datetime | None:
    value = event.get("RECURRENCE-ID")
    return None if value is None or isinstance(value, list) else value.dt


#: The first window :func:`_first_instances` looks at; it doubles from there.
_FIRST_SPAN = timedelta(hours=1)


def _first_instances(query: recurring_ical_events.CalendarQuery, begin: datetime, end: datetime,
                     cap: int) -> list[icalendar.Event]:
    """At least the first ``cap`` + 1 instances that start in [begin, end) (or all there are), in windows
    that double from an hour: a rule with millions of instances costs about ``cap`` of them, a yearly one a
    few dozen queries. (``after`` steps in windows that halve down to 15 minutes while they find something,
    and each step expands the rule again from its start: 1,000 instances of an HOURLY rule took 6 s.)"""
    found: list[icalendar.Event] = []
    lower, span = begin, _FIRST_SPAN
    while lower < end and len(found) <= cap:
        upper = min(lower + span, end)
        found.extend(event for event in query.between(lower, upper) if lower <= _start(event) < upper)
        lower, span = upper, span * 2
    return found


def expand(text: str, start: int, horizon: int, cap: int) -> Expansion:
    """The instances of the VEVENTs in ``text`` that start in [start, horizon), at most ``cap`` of them.

    ``complete_until`` says up to where the list is exhaustive: ``horizon``, or less when ``cap`` cut it
    short. A time-range query beyond it must fall back on the item's own bounds.
    """
    try:
        calendar = icalendar.Calendar.from_ical(text)
        query = recurring_ical_events.of(calendar, components=["VEVENT"])
        begin = datetime.fromtimestamp(start, UTC) - timedelta(seconds=FLOATING_SLACK + 1)
        end = datetime.fromtimestamp(horizon, UTC)
        events = _first_instances(query, begin, end, cap)
        described = Descriptions(list(calendar.walk("VEVENT")))
    except Exception as error:  # a recurrence rule the library cannot expand: no index, the bounds decide
        logger.warning("cannot expand event for the instance index: %s", error)
        return Expansion([], start)
    result = []
    for event in events:
        first, floating = _epoch(event["DTSTART"].dt)
        last = _epoch(event["DTEND"].dt)[0] if "DTEND" in event else first
        busy = described.busy_columns(event, first, last if "DTEND" in event else _epoch(event.end)[0])
        if floating:
            first, last = first - FLOATING_SLACK, last + FLOATING_SLACK
        result.append(Instance(
            first, max(last, first + 1), floating,
            str(event.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT",
            str(event.get("STATUS", "CONFIRMED")).upper(),
            busy,
        ))
    if len(result) > cap:
        result.sort(key=lambda instance: instance.start)
        result = result[:cap]
        return Expansion(result, result[-1].start)
    return Expansion(result, horizon)
