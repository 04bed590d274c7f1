"""Parsing calendar objects and expanding them into event instances (pure, no I/O).

:func:`describe` says what one VEVENT tells about its instances; the SQL storage's instance index keeps that
per instance (``plugins.sqlstore.instances``), and :mod:`proxy.availability.index` makes instances of its rows.
An object the index does not list over a window is parsed into a :class:`ParsedItem`: a non-recurring item's
instances are computed at parse time; a recurring one keeps its recurring-ical-events query so that it can be
expanded over any window later.

All instants leave this module as aware UTC datetimes. Floating times and DATE values are read in the user's
zone, which is why a parsed item belongs to one zone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

from proxy.model import EVENT_KIND_PROPERTY, EVENT_ORIGIN_PROPERTY, EventKind, Origin
from proxy.validation import dense_rule, most_per_window

log = logging.getLogger(__name__)

#: set by the relay on mirrored iCloud events (proxy.relay.transforms): travel time and applied policies
TRAVEL_PROPERTY = "X-CALRELAY-TRAVEL"
POLICY_PROPERTY = "X-CALRELAY-POLICY"

#: Instances one event may generate in one expansion unless the index is told otherwise (``limits.max_instances``).
DEFAULT_MAX_INSTANCES = 3000
#: Summary suffix of the stand-in instance of an event that would generate more than the cap.
TOO_MANY_INSTANCES = "too many instances"

#: Longest stand-in the index asks for (one 28-day bucket), plus a day.
STAND_IN_LOOKBACK = timedelta(days=29)

#: Slack added to a component's nominal length when looking back for instances that started before a window:
#: wall-clock lengths and all-day dates shift by a DST change (at most a few hours) once placed in a zone.
DURATION_SLACK = timedelta(days=1)


class Disposition(StrEnum):
    """What an instance does to the user's availability, in order of precedence."""

    BUSY = "busy"
    CANCELLED = "cancelled"  # STATUS:CANCELLED never blocks (rule 5)
    DECLINED = "declined"  # the user's own attendee entry has PARTSTAT=DECLINED
    FREE = "free"  # TRANSP:TRANSPARENT is shown but leaves the slot open (rule 5)
    NON_BLOCKING_CALENDAR = "non-blocking-calendar"  # a primary mirror excluded from the conflict calendars


def normalize_address(address: str) -> str:
    """A calendar-user address in the form used for matching: ``mailto:`` scheme, lower case."""
    value = address.strip()
    if value.lower().startswith("mailto:"):
        value = value[len("mailto:") :]
    return "mailto:" + value.lower()


@dataclass(frozen=True, slots=True)
class Instance:
    """One occurrence of an event, in UTC, with what decides whether it blocks."""

    calendar: str
    href: str
    uid: str
    recurrence_id: datetime | None  # original start of a recurring occurrence; None for a single event
    summary: str
    kind: EventKind
    origin: Origin
    start: datetime
    end: datetime
    all_day: bool
    transparent: bool
    cancelled: bool
    declined_by: frozenset[str]  # normalized addresses of attendees with PARTSTAT=DECLINED
    from_blocking_calendar: bool = True  # False for a mirror whose events do not block (rule 3)
    #: the link policies the relay applied to this iCloud event (X-CALRELAY-POLICY), e.g. "all-day=always-busy"
    policy: str = ""
    #: A stand-in covering a whole window for an event that would generate more instances than the cap.
    too_many_instances: bool = False

    def disposition(self, addresses: frozenset[str]) -> Disposition:
        """``addresses`` are the user's normalized calendar-user addresses (see :func:`normalize_address`)."""
        if self.cancelled:
            return Disposition.CANCELLED
        if self.declined_by and not self.declined_by.isdisjoint(addresses):
            return Disposition.DECLINED
        if self.transparent:
            return Disposition.FREE
        if not self.from_blocking_calendar:
            return Disposition.NON_BLOCKING_CALENDAR
        return Disposition.BUSY

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end


def to_utc(value: date | datetime, zone: ZoneInfo) -> datetime:
    """An iCalendar DATE or DATE-TIME as an aware UTC datetime; floating values and dates are in ``zone``."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=zone)
        return value.astimezone(UTC)
    return datetime.combine(value, time(), tzinfo=zone).astimezone(UTC)


def _text(component: icalendar.Component, name: str) -> str:
    value = component.get(name)
    if isinstance(value, list):  # a property given twice: the first counts, as in Radicale (vobject)
        value = value[0] if value else None
    return "" if value is None else str(value).strip()


def _kind(component: icalendar.Component) -> EventKind:
    raw = _text(component, EVENT_KIND_PROPERTY)
    if not raw:
        return EventKind.APPOINTMENT
    try:
        return EventKind.parse(raw)
    except ValueError:
        # An unknown kind still occupies time; treating it as an appointment keeps it blocking.
        log.warning("event %s has unknown %s %r; treated as APPOINTMENT",
                    _text(component, "UID"), EVENT_KIND_PROPERTY, raw)
        return EventKind.APPOINTMENT


def _origin(component: icalendar.Component) -> Origin:
    raw = _text(component, EVENT_ORIGIN_PROPERTY).upper()
    try:
        return Origin(raw) if raw else Origin.CRM
    except ValueError:
        log.warning("event %s has unknown %s %r; treated as CRM",
                    _text(component, "UID"), EVENT_ORIGIN_PROPERTY, raw)
        return Origin.CRM


def _declined_by(component: icalendar.Component) -> frozenset[str]:
    attendees = component.get("ATTENDEE")
    if attendees is None:
        return frozenset()
    if not isinstance(attendees, list):
        attendees = [attendees]
    return frozenset(
        normalize_address(str(attendee))
        for attendee in attendees
        if str(attendee.params.get("PARTSTAT", "")).upper() == "DECLINED"
    )


def _travel(component: icalendar.Component) -> timedelta:
    value = component.get(TRAVEL_PROPERTY)
    if value is None:
        return timedelta(0)
    raw = value.to_ical().decode() if hasattr(value, "to_ical") else str(value)
    try:
        value = icalendar.vDuration.from_ical(raw)
    except ValueError:
        log.warning("event %s has a bad %s %r; ignored", _text(component, "UID"), TRAVEL_PROPERTY, raw)
        return timedelta(0)
    return value if isinstance(value, timedelta) and value > timedelta(0) else timedelta(0)


@dataclass(frozen=True, slots=True)
class Description:
    """What one (possibly expanded) VEVENT says about an instance, before it is placed in a zone: the part
    of :class:`Instance` that the SQL storage's instance index keeps per row (``plugins.sqlstore.busy``)."""

    uid: str
    summary: str
    kind: EventKind
    origin: Origin
    #: Travel time (the relay's X-CALRELAY-TRAVEL, from Apple's X-APPLE-TRAVEL-DURATION) blocks before the event.
    travel: timedelta
    transparent: bool
    cancelled: bool
    declined_by: frozenset[str]
    policy: str


def describe(component: icalendar.Event) -> Description:
    return Description(
        uid=_text(component, "UID"),
        summary=_text(component, "SUMMARY"),
        kind=_kind(component),
        origin=_origin(component),
        travel=_travel(component),
        transparent=_text(component, "TRANSP").upper() == "TRANSPARENT",
        cancelled=_text(component, "STATUS").upper() == "CANCELLED",
        declined_by=_declined_by(component),
        policy=_text(component, POLICY_PROPERTY),
    )


def instance_of(component: icalendar.Event, calendar: str, href: str, zone: ZoneInfo) -> Instance:
    """The instance described by one (possibly expanded) VEVENT."""
    start, end = component.start, component.end
    recurrence_id = component.get("RECURRENCE-ID")
    about = describe(component)
    return Instance(
        calendar=calendar,
        href=href,
        uid=about.uid,
        recurrence_id=None if recurrence_id is None else to_utc(recurrence_id.dt, zone),
        summary=about.summary,
        kind=about.kind,
        origin=about.origin,
        start=to_utc(start, zone) - about.travel,
        end=to_utc(end, zone),
        all_day=not isinstance(start, datetime),
        transparent=about.transparent,
        cancelled=about.cancelled,
        declined_by=about.declined_by,
        policy=about.policy,
    )


def _nominal_length(component: icalendar.Event) -> timedelta:
    """The component's own length before it is placed in a zone (DTEND - DTSTART, DURATION or the default)."""
    start, end = component.start, component.end
    if isinstance(start, datetime) and isinstance(end, datetime) and (start.tzinfo is None) != (
        end.tzinfo is None
    ):
        start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    return max(end - start, timedelta(0))


def recurs(events: Iterable[icalendar.Event]) -> bool:
    """Whether an object's VEVENTs make a series (whose instances carry a RECURRENCE-ID)."""
    # EXDATE on a lone event can remove it, so recurring-ical-events must judge those as well.
    return any("RRULE" in event or "RDATE" in event or "EXDATE" in event for event in events)


class ParsedItem:
    """One stored calendar object, parsed once for one user zone."""

    def __init__(
        self, text: str, calendar: str, href: str, zone: ZoneInfo, max_instances: int = DEFAULT_MAX_INSTANCES
    ) -> None:
        self.calendar = calendar
        self.href = href
        self.zone = zone
        self.max_instances = max_instances
        parsed = icalendar.Calendar.from_ical(text)
        events = list(parsed.walk("VEVENT"))
        #: The first event whose rule is denser than the cap (stored before the write-time check, or by a path
        #: that skips it): never expanded, it counts busy for every window from its start instead.
        self.runaway: icalendar.Event | None = next((event for event in events if self._dense(event)), None)
        self.recurring = recurs(events)
        #: Upper bound of any instance's length, used to look back for instances that began before a window.
        self.max_length = max((_nominal_length(event) for event in events), default=timedelta(0)) + (
            DURATION_SLACK
        )
        if self.runaway is not None:
            # Its stand-in spans a whole index bucket: look back that far so a window inside it finds it.
            self.max_length = max(self.max_length, STAND_IN_LOOKBACK)
        self._query = recurring_ical_events.of(parsed)
        #: Instances of a non-recurring item, computed once; empty for a recurring item. Each VEVENT of such an
        #: item is one instance (a lone event, or overrides of a series stored elsewhere), so they are read
        #: directly: parsing dominates a cold start and a query object per event would add a third.
        self.fixed: tuple[Instance, ...] = () if self.recurring else self._instances(events)

    def _dense(self, event: icalendar.Event) -> bool:
        start = event.get("DTSTART")
        if start is None:
            return False
        rules = event.get("RRULE")
        rules = rules if isinstance(rules, list) else [rules] if rules is not None else []
        return any(self._dense_rule(rule, start.dt) for rule in rules)

    def _dense_rule(self, rule: icalendar.vRecur, start: date | datetime) -> bool:
        try:
            bound = most_per_window(
                str(rule.get("FREQ", [""])[0]), len(rule.get("BYHOUR", [])), len(rule.get("BYMINUTE", [])),
                len(rule.get("BYSECOND", [])),
            )
        except ValueError:  # an unknown FREQ: recurring-ical-events reports it
            return False
        # Parsing the rule costs more than the rest of the item: only rules that might be dense are parsed.
        return bound > self.max_instances and dense_rule(rule.to_ical().decode(), start, self.max_instances)

    def expand(self, start: datetime, end: datetime) -> tuple[Instance, ...]:
        """The instances overlapping [start, end) (aware datetimes); at most ``max_instances`` of them, or
        else one "too many instances" stand-in that keeps the window busy."""
        if not self.recurring:
            return tuple(instance for instance in self.fixed if instance.overlaps(start, end))
        if self.runaway is not None:
            return self._stand_in(self.runaway, start, end)
        # Bounds in the user's zone make recurring-ical-events read floating times in that zone too.
        occurrences = self._query.between(start.astimezone(self.zone), end.astimezone(self.zone))
        if len(occurrences) > self.max_instances:  # e.g. many RDATEs: a lone window may still be too dense
            return self._stand_in(next(iter(occurrences)), start, end)
        return tuple(instance for instance in self._instances(occurrences) if instance.overlaps(start, end))

    def _stand_in(self, event: icalendar.Event, start: datetime, end: datetime) -> tuple[Instance, ...]:
        """One busy instance over the part of [start, end) after the event's first start: never free."""
        first = instance_of(event, self.calendar, self.href, self.zone)
        begin = max(start, first.start)
        if begin >= end:
            return ()
        summary = f"{first.summary} ({TOO_MANY_INSTANCES})" if first.summary else TOO_MANY_INSTANCES
        return (
            Instance(
                calendar=self.calendar, href=self.href, uid=first.uid, recurrence_id=None, summary=summary,
                kind=first.kind, origin=first.origin, start=begin, end=end, all_day=False, transparent=False,
                cancelled=False, declined_by=frozenset(), too_many_instances=True,
            ),
        )

    def _instances(self, occurrences: Iterable[icalendar.Event]) -> tuple[Instance, ...]:
        instances = (instance_of(event, self.calendar, self.href, self.zone) for event in occurrences)
        # A zero-length instance contains no instant, so it can neither block nor explain a busy instant.
        return tuple(instance for instance in instances if instance.end > instance.start)
