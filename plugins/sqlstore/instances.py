"""Expanding an event into the rows of the instance index (pure: text in, rows out)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import icalendar
import recurring_ical_events

logger = logging.getLogger(__name__)

#: Floating times and dates mean local time, which lies within these offsets of UTC.
FLOATING_SLACK = 14 * 3600


@dataclass(frozen=True)
class Instance:
    start: int
    end: int
    floating: bool
    transparent: bool
    status: str


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
        ))
    if len(result) > cap:
        result.sort(key=lambda instance: instance.start)
        result = result[:cap]
        return Expansion(result, result[-1].start)
    return Expansion(result, horizon)
