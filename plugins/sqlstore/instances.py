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
    #: What availability reads (the ``busy_*`` and following columns of ``dav_instances``): :func:`busy_columns`.
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


def busy_columns(event: icalendar.Event, recurrence_ids: bool) -> dict[str, Any]:
    """The instance index columns availability reads for one expanded VEVENT (what
    :func:`proxy.availability.instances.instance_of` makes of it, before it is placed in a zone).
    ``recurrence_ids``: the object is a series, or holds overrides (else recurring-ical-events gives a lone
    event a RECURRENCE-ID of its own, which availability does not report)."""
    about = describe(event)
    start = _epoch(event.start)[0]
    end = _epoch(event.end)[0]
    travel = int(about.travel.total_seconds())
    recurrence_id = event.get("RECURRENCE-ID") if recurrence_ids else None
    return {
        "busy_start": start - travel, "busy_end": end, "long_busy": end - (start - travel) > LONG_BUSY,
        "travel": travel, "all_day": not isinstance(event.start, datetime),
        "recurrence_id": None if recurrence_id is None else _epoch(recurrence_id.dt)[0],
        "summary": about.summary, "kind": str(about.kind), "origin": str(about.origin),
        "policy": about.policy or None, "declined": "\n".join(sorted(about.declined_by)) or None,
    }


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
        originals = list(calendar.walk("VEVENT"))
        recurrence_ids = recurs(originals) or any("RECURRENCE-ID" in event for event in originals)
    except Exception as error:  # a recurrence rule the library cannot expand: no index, the bounds decide
        logger.warning("cannot expand event for the instance index: %s", error)
        return Expansion([], start)
    result = []
    for event in events:
        first, floating = _epoch(event["DTSTART"].dt)
        last = _epoch(event["DTEND"].dt)[0] if "DTEND" in event else first
        if floating:
            first, last = first - FLOATING_SLACK, last + FLOATING_SLACK
        result.append(Instance(
            first, max(last, first + 1), floating,
            str(event.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT",
            str(event.get("STATUS", "CONFIRMED")).upper(),
            busy_columns(event, recurrence_ids),
        ))
    if len(result) > cap:
        result.sort(key=lambda instance: instance.start)
        result = result[:cap]
        return Expansion(result, result[-1].start)
    return Expansion(result, horizon)
