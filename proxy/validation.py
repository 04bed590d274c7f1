"""Write-time validation of calendar objects: what calrelay refuses to store because it cannot serve it.

Pure functions, no I/O. Two stages:

- :func:`body_problem` judges the raw bytes of a PUT before anything parses them (Content-Type, UTF-8, NUL,
  and ceilings on zones, components, lines, property length and nesting counted on the text);
- :func:`calendar_problem` judges the parsed object (vobject, as Radicale parsed it) once, in the storage
  plugin: recurrence rules finer than the frequency floor, absurd COUNTs, rules that expand past the instance
  cap inside one index bucket, DTEND before DTSTART, year 0000, nested VCALENDARs, and ceilings on
  components, VTIMEZONEs, EXDATE/RDATE values and attendees.

Each problem is a sentence that says what to change; ``None`` means the object is acceptable.
:func:`dense_rule` is shared with the availability index, which must never expand such a rule fully.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from enum import IntEnum
from typing import Any

from dateutil import rrule as dateutil_rrule

from proxy.config import LimitsSettings

#: The window over which a rule's density is judged: one bucket of the availability index.
DENSITY_WINDOW = timedelta(days=28)

_MEDIA_TYPES = ("text/calendar",)
_YEAR_ZERO = re.compile(
    r"^(DTSTART|DTEND|DUE|RECURRENCE-ID|EXDATE|RDATE|DTSTAMP|CREATED|LAST-MODIFIED)[^:\r\n]*:(?:[^\r\n]*,)?0000\d{4}",
    re.IGNORECASE | re.MULTILINE,
)


class Frequency(IntEnum):
    """RRULE FREQ values, finest first (so that ``<`` means "more frequent")."""

    SECONDLY = 0
    MINUTELY = 1
    HOURLY = 2
    DAILY = 3
    WEEKLY = 4
    MONTHLY = 5
    YEARLY = 6

    @classmethod
    def parse(cls, raw: str) -> Frequency:
        try:
            return cls[raw.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown FREQ {raw!r}; use one of {', '.join(f.name for f in cls)}") from None


#: The parser nests one call per component level; RFC 5545 objects nest three deep (VCALENDAR > VEVENT >
#: VALARM, VTIMEZONE > STANDARD), a few more leave room for X- components. 3,900 levels overflowed the stack.
MAX_NESTING = 8
_COMPONENT_LINE = re.compile(r"^(BEGIN|END):", re.MULTILINE)


def _deepest_nesting(upper: str) -> int:
    """How deep BEGIN: lines nest in ``upper`` (the object's text in upper case), counted on the text."""
    depth = deepest = 0
    for line in _COMPONENT_LINE.finditer(upper):
        depth += 1 if line.group(1) == "BEGIN" else -1
        deepest = max(deepest, depth)
    return deepest


def _longest_property(body: bytes) -> int:
    """Bytes of the longest content line of ``body`` once folded lines are joined (RFC 5545 section 3.1).
    One step per line: called once the line count is known to be within its ceiling."""
    longest = current = 0
    for line in body.split(b"\n"):
        length = len(line) - line.endswith(b"\r")
        # A continuation line starts with one space or tab, which unfolding removes.
        current = current + length - 1 if line[:1] in (b" ", b"\t") else length
        longest = max(longest, current)
    return longest


def body_problem(content_type: str, body: bytes, limits: LimitsSettings | None = None) -> str | None:
    """Why the raw body of a calendar-object PUT is refused, or None. Also counts components and VTIMEZONEs
    on the text, so that an object of 5,000 zones is refused before anything spends seconds parsing it."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type not in _MEDIA_TYPES:
        return (
            f"Content-Type {media_type!r} is not accepted for a calendar object: send the iCalendar text as "
            "text/calendar (RFC 4791 section 5.3.2.1)"
        )
    if b"\x00" in body:
        return "the body contains a NUL byte; iCalendar is text: remove it"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"the body is not valid UTF-8 (byte {error.start}); send the iCalendar text encoded as UTF-8"
    ceilings = limits or LimitsSettings()
    upper = text.upper()
    timezones = upper.count("BEGIN:VTIMEZONE")
    if timezones > ceilings.max_timezones:
        return (
            f"the object has {timezones} VTIMEZONEs, more than {ceilings.max_timezones} (limits.max_timezones): "
            "include only the zones its events use"
        )
    # Components of components (alarms, zone rules) count too: a generous multiple of the per-object ceiling.
    if upper.count("BEGIN:") > 4 * ceilings.max_components:
        return (
            f"the object has more than {4 * ceilings.max_components} BEGIN: lines (limits.max_components "
            "counts top-level components): split it into several objects"
        )
    # Parsing, checking and serializing cost about 0.1 ms per property line, whatever the line holds.
    lines = text.count("\n") + 1
    if lines > ceilings.max_lines:
        return (
            f"the object has {lines} lines, more than {ceilings.max_lines} (limits.max_lines): split it into "
            "several objects or shorten its long texts"
        )
    longest = _longest_property(body)
    if longest > ceilings.max_property_bytes:
        return (
            f"one property is {longest:,} bytes long, more than {ceilings.max_property_bytes:,} "
            "(limits.max_property_bytes): shorten its text, or link a large attachment (ATTACH by URL) instead "
            "of embedding it"
        )
    deepest = _deepest_nesting(upper)
    if deepest > MAX_NESTING:
        return (
            f"the object nests components {deepest} deep, more than {MAX_NESTING}: iCalendar nests them three "
            "deep (VCALENDAR, VEVENT, VALARM)"
        )
    # Checked on the text because the parser silently turns the year 0000 into 2000.
    year_zero = _YEAR_ZERO.search(text)
    if year_zero:
        return f"{year_zero.group(1).upper()} is in the year 0000, which does not exist: give a real date"
    return None


#: One period of each FREQ: a rule's pattern repeats after INTERVAL periods, so that span shows its densest window.
_PERIOD = {
    dateutil_rrule.YEARLY: timedelta(days=366), dateutil_rrule.MONTHLY: timedelta(days=31),
    dateutil_rrule.WEEKLY: timedelta(days=7), dateutil_rrule.DAILY: timedelta(days=1),
    dateutil_rrule.HOURLY: timedelta(hours=1), dateutil_rrule.MINUTELY: timedelta(minutes=1),
    dateutil_rrule.SECONDLY: timedelta(seconds=1),
}


def dense_rule(rule: str, dtstart: date | datetime, cap: int, window: timedelta = DENSITY_WINDOW) -> bool:
    """Whether ``rule`` (an RRULE value) starting at ``dtstart`` has more than ``cap`` instances in some
    ``window`` (any 28 days, e.g. every minute of December in a YEARLY rule that starts in January).

    The rule's pattern repeats after INTERVAL periods of its FREQ, or after a year where BY* parts are
    coarser than FREQ, so the longer of the two plus a window holds its densest window. Slides over that span
    and stops at the first window of ``cap`` + 1 instances: a dense rule costs about ``cap`` steps past its
    first dense stretch, one that is not costs its instances in one cycle (about 9,000 for an HOURLY rule)."""
    start = _naive(dtstart)
    try:
        parsed = dateutil_rrule.rrulestr(rule, dtstart=start, ignoretz=True)
    except (ValueError, TypeError, OverflowError):
        return False  # not ours to judge here: the parser that stores the object reports a malformed rule
    if _most_per_window(parsed, window) <= cap:
        return False  # most rules: the bound from their BYHOUR/BYMINUTE/BYSECOND settles it without a step
    period = _PERIOD.get(getattr(parsed, "_freq", dateutil_rrule.YEARLY), timedelta(days=366))
    try:
        # BY* parts coarser than FREQ (BYMONTH on an HOURLY rule) make the cycle up to a year long.
        cycle = max(period * max(int(getattr(parsed, "_interval", 1) or 1), 1), _PERIOD[dateutil_rrule.YEARLY])
        horizon = start + cycle + window
    except OverflowError:
        horizon = datetime.max
    recent: deque[datetime] = deque(maxlen=cap + 1)
    try:
        for at in parsed:
            if at >= horizon:
                return False
            recent.append(at)
            if len(recent) > cap and recent[-1] - recent[0] < window:
                return True
    except (ValueError, OverflowError):
        return False
    return False


def _most_per_window(parsed: Any, window: timedelta) -> float:
    """An upper bound of a rule's instances in ``window``: each day holds each (hour, minute, second) it
    allows at most once. dateutil fills BYHOUR/BYMINUTE/BYSECOND from DTSTART where FREQ is coarser."""
    def allowed(values: Any, every: int) -> int:
        return len(values) if values else every

    hours = allowed(getattr(parsed, "_byhour", None), 24)
    minutes = allowed(getattr(parsed, "_byminute", None), 60)
    seconds = allowed(getattr(parsed, "_bysecond", None), 60)
    return (window.days + 1) * hours * minutes * seconds


def most_per_window(freq: str, byhour: int, byminute: int, bysecond: int, window: timedelta = DENSITY_WINDOW) -> int:
    """The same bound from a rule's parts as written (counts of BYHOUR/BYMINUTE/BYSECOND values, 0 for none),
    so that ordinary rules are judged without parsing them at all."""
    fine = Frequency.parse(freq) if freq else Frequency.YEARLY
    hours = byhour or (24 if fine <= Frequency.HOURLY else 1)
    minutes = byminute or (60 if fine <= Frequency.MINUTELY else 1)
    seconds = bysecond or (60 if fine <= Frequency.SECONDLY else 1)
    return (window.days + 1) * hours * minutes * seconds


def _naive(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime(value.year, value.month, value.day)


_RULE_PART = re.compile(r"(?:^|;)\s*(FREQ|COUNT)\s*=\s*([^;]*)", re.IGNORECASE)


def rule_problem(rule: str, dtstart: Any, limits: LimitsSettings, max_count: int) -> str | None:
    """Why one RRULE value is refused, or None."""
    parts = {name.upper(): value.strip() for name, value in _RULE_PART.findall(rule)}
    freq = parts.get("FREQ")
    if freq is None:
        return f"RRULE {rule!r} has no FREQ"
    try:
        frequency = Frequency.parse(freq)
    except ValueError as error:
        return f"RRULE {rule!r}: {error}"
    floor = Frequency.parse(limits.min_frequency)
    if frequency < floor:
        return (
            f"RRULE FREQ={frequency.name} is finer than this server accepts ({floor.name} or coarser, "
            "limits.min_frequency): use a coarser FREQ, or store the few instances as separate events"
        )
    count = parts.get("COUNT")
    if count is not None:
        if not count.isdigit():
            return f"RRULE COUNT={count!r} is not a whole number"
        if int(count) > max_count:
            return f"RRULE COUNT={count} is more than {max_count} instances: use a smaller COUNT or an UNTIL"
    if isinstance(dtstart, date) and dense_rule(rule, dtstart, limits.max_instances):
        return (
            f"RRULE {rule!r} makes more than {limits.max_instances} instances in {DENSITY_WINDOW.days} days "
            "(limits.max_instances): thin the BY* parts or use a coarser FREQ"
        )
    return None


def _values(lines: Iterable[Any]) -> int:
    total = 0
    for line in lines:
        value = line.value
        total += len(value) if isinstance(value, list) else 1
    return total


def _component_problem(component: Any, limits: LimitsSettings, max_count: int) -> str | None:
    contents = component.contents
    uid_lines = contents.get("uid")
    where = f" in {component.name}" + (f" (UID {uid_lines[0].value})" if uid_lines else "")
    dates = _values(contents.get("exdate", [])) + _values(contents.get("rdate", []))
    if dates > limits.max_date_values:
        return (
            f"{dates} EXDATE/RDATE values{where} are more than {limits.max_date_values} (limits.max_date_values): "
            "end the series and start a new one instead"
        )
    attendees = len(contents.get("attendee", []))
    if attendees > limits.max_attendees:
        return f"{attendees} attendees{where} are more than {limits.max_attendees} (limits.max_attendees)"
    start_line = contents.get("dtstart", [None])[0]
    start = getattr(start_line, "value", None)
    end_line = contents.get("dtend", [None])[0]
    end = getattr(end_line, "value", None)
    if isinstance(start, date) and isinstance(end, date) and _comparable(start, end) and end < start:
        return f"DTEND {end} is before DTSTART {start}{where}: swap them or fix the end"
    for line in contents.get("rrule", []):
        problem = rule_problem(str(line.value), start, limits, max_count)
        if problem:
            return problem + where
    return None


def _comparable(start: date, end: date) -> bool:
    if isinstance(start, datetime) != isinstance(end, datetime):
        return False
    if isinstance(start, datetime) and isinstance(end, datetime):
        return (start.tzinfo is None) == (end.tzinfo is None)
    return True


def calendar_problem(vcalendar: Any, limits: LimitsSettings, max_count: int) -> str | None:
    """Why a parsed calendar object (a vobject VCALENDAR) is refused, or None.

    ``max_count`` is the largest RRULE COUNT accepted (``storage.max_occurrences``)."""
    children = list(vcalendar.getChildren())
    if len(children) > limits.max_components:
        return (
            f"the object has {len(children)} components, more than {limits.max_components} "
            "(limits.max_components): split it into several objects"
        )
    timezones = 0
    for child in children:
        if child.name == "VCALENDAR":
            return "the object contains a VCALENDAR inside its VCALENDAR: send one flat VCALENDAR"
        if child.name == "VTIMEZONE":
            timezones += 1
            continue
        if not hasattr(child, "contents"):
            continue
        nested = [c for c in child.getChildren() if getattr(c, "name", "") == "VCALENDAR"]
        if nested:
            return f"{child.name} contains a VCALENDAR: send one flat VCALENDAR"
        problem = _component_problem(child, limits, max_count)
        if problem:
            return problem
    if timezones > limits.max_timezones:
        return (
            f"the object has {timezones} VTIMEZONEs, more than {limits.max_timezones} (limits.max_timezones): "
            "include only the zones its events use"
        )
    return None


def runaway_problem(vcalendar: Any, limits: LimitsSettings) -> str | None:
    """Why a stored object cannot be expanded (a rule denser than the instance cap), or None. For objects
    stored before the write-time checks: a REPORT that would expand them is refused instead of hanging."""
    for component in vcalendar.getChildren():
        contents = getattr(component, "contents", {})
        start = getattr(contents.get("dtstart", [None])[0], "value", None)
        if not isinstance(start, date):
            continue
        for line in contents.get("rrule", []):
            if dense_rule(str(line.value), start, limits.max_instances):
                uid = contents.get("uid", [None])[0]
                return (
                    f"the stored event {getattr(uid, 'value', '?')} repeats more than {limits.max_instances} "
                    f"times in {DENSITY_WINDOW.days} days (RRULE {line.value}), too many to expand "
                    "(limits.max_instances): fix or delete it, then ask again"
                )
    return None
