"""iCalendar checks and queries: what iCloud accepts on PUT, calendar-query filters, and expansion."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import UTC, datetime

import recurring_ical_events
from icalendar import Calendar, Component

from proxy.emulator.xml import CALDAV, tag

log = logging.getLogger(__name__)

FAR_PAST = datetime(1900, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)


class ObjectRejected(Exception):
    """A PUT body iCloud would refuse; ``status`` is the HTTP status it uses."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ParsedObject:
    calendar: Calendar
    uid: str
    component: str
    summary: str


def parse_object(body: str) -> ParsedObject:
    """Validate a calendar object resource the way iCloud does."""
    try:
        calendar = Calendar.from_ical(body)
    except (ValueError, IndexError, KeyError) as error:
        raise ObjectRejected(400, f"not valid iCalendar: {error}") from error
    if not isinstance(calendar, Calendar) or calendar.name != "VCALENDAR":
        raise ObjectRejected(400, "the body is not a VCALENDAR")
    items = [c for c in calendar.subcomponents if c.name != "VTIMEZONE"]
    if not items:
        raise ObjectRejected(400, "no calendar component")
    names = {item.name for item in items}
    if "VJOURNAL" in names:
        # iCloud has no journal support and fails with a server error rather than a clean refusal.
        raise ObjectRejected(500, "VJOURNAL is not supported")
    if len(names) > 1:
        raise ObjectRejected(400, "more than one component type in one resource")
    uids = {str(item.get("UID", "")) for item in items}
    if len(uids) != 1 or "" in uids:
        raise ObjectRejected(400, "every component needs the same, non-empty UID")
    component = names.pop()
    if component == "VEVENT":
        for item in items:
            if "DTSTART" in item and "DTEND" not in item and "DURATION" not in item:
                # Seen on live iCloud: a VEVENT without DTEND or DURATION gets "404 Not Found" (sic).
                raise ObjectRejected(404, "VEVENT without DTEND or DURATION")
    master = next((item for item in items if "RECURRENCE-ID" not in item), items[0])
    return ParsedObject(calendar, uids.pop(), component, str(master.get("SUMMARY", "")))


def parse_utc(value: str) -> datetime:
    """A CalDAV time-range attribute (``20240101T000000Z``)."""
    return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def time_range(element: ElementTree.Element) -> tuple[datetime, datetime]:
    start = element.get("start")
    end = element.get("end")
    return (parse_utc(start) if start else FAR_PAST, parse_utc(end) if end else FAR_FUTURE)


def occurrences(calendar: Calendar, component: str, start: datetime, end: datetime) -> list[Component]:
    return list(recurring_ical_events.of(calendar, components=[component]).between(start, end))


class FilterNotSupported(Exception):
    """A filter iCloud refuses: only a VCALENDAR comp-filter, with nothing inside it."""


def check_filter(filter_element: ElementTree.Element | None) -> None:
    if filter_element is None:
        return
    top = filter_element.find(tag(CALDAV, "comp-filter"))
    if top is None or top.get("name", "").upper() != "VCALENDAR":
        raise FilterNotSupported("the filter must start with a VCALENDAR comp-filter")
    if top.find(tag(CALDAV, "comp-filter")) is None:
        raise FilterNotSupported("a VCALENDAR-only comp-filter is not supported")


def matches_filter(calendar: Calendar, component: str, filter_element: ElementTree.Element | None) -> bool:
    if filter_element is None:
        return True
    top = filter_element.find(tag(CALDAV, "comp-filter"))
    assert top is not None  # check_filter ran first
    return all(_matches_comp(calendar, component, inner) for inner in top.findall(tag(CALDAV, "comp-filter")))


def _matches_comp(calendar: Calendar, component: str, comp_filter: ElementTree.Element) -> bool:
    name = comp_filter.get("name", "").upper()
    present = name == component
    if comp_filter.find(tag(CALDAV, "is-not-defined")) is not None:
        return not present
    if not present:
        return False
    range_element = comp_filter.find(tag(CALDAV, "time-range"))
    if range_element is not None:
        start, end = time_range(range_element)
        try:
            if not occurrences(calendar, component, start, end):
                return False
        except (ValueError, TypeError) as error:
            # A broken recurrence must not hide the object from a client that is looking for it.
            log.warning("recurrence expansion failed, object treated as matching: %s", error)
    items = [c for c in calendar.subcomponents if c.name == name]
    for prop_filter in comp_filter.findall(tag(CALDAV, "prop-filter")):
        if not any(_matches_prop(item, prop_filter) for item in items):
            return False
    return True


def _matches_prop(item: Component, prop_filter: ElementTree.Element) -> bool:
    name = prop_filter.get("name", "").upper()
    if prop_filter.find(tag(CALDAV, "is-not-defined")) is not None:
        return name not in item
    if name not in item:
        return False
    text_match = prop_filter.find(tag(CALDAV, "text-match"))
    if text_match is None:
        return True
    values = item[name] if isinstance(item[name], list) else [item[name]]
    needle = text_match.text or ""
    case_sensitive = text_match.get("collation", "i;ascii-casemap") == "i;octet"
    found = any(
        (needle in str(value)) if case_sensitive else (needle.lower() in str(value).lower())
        for value in values
    )
    return found != (text_match.get("negate-condition", "no") == "yes")


def expand(calendar: Calendar, component: str, start: datetime, end: datetime, stamp: datetime) -> str:
    """One component per instance in the window, times in UTC, each with a query-time DTSTAMP placed before
    the stored one: iCloud's expanded data carries both."""
    instances: list[str] = []
    for instance in occurrences(calendar, component, start, end):
        for key in ("RRULE", "RDATE", "EXDATE"):
            instance.pop(key, None)
        for key in ("DTSTART", "DTEND", "DUE", "RECURRENCE-ID"):
            value = instance[key].dt if key in instance else None
            if isinstance(value, datetime) and value.tzinfo is not None:
                del instance[key]
                instance.add(key, value.astimezone(UTC))
        instances.append(_with_query_stamp(instance.to_ical().decode(), stamp))
    header = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Apple Inc.//iCloud Calendar Emulator//EN\r\n"
    return header + "".join(instances) + "END:VCALENDAR\r\n"


def _with_query_stamp(text: str, stamp: datetime) -> str:
    line = f"DTSTAMP:{stamp.astimezone(UTC):%Y%m%dT%H%M%SZ}\r\n"
    position = text.find("\r\nDTSTAMP")
    if position == -1:
        position = text.find("\r\n")
    return text[: position + 2] + line + text[position + 2 :]
