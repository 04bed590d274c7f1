"""Pure transforms of calendar objects between the CRM and iCloud (design §3, §4 "Transforms").

Everything here takes and returns iCalendar text and does no I/O, so the relay's planner can call it freely
and the tests can pin every rule. Bad input raises ``ValueError`` with a message naming the problem: the relay
shows it as the reason an item is pending.

Decisions worth knowing:

* ``to_mirror`` keeps an iCloud event's times, time zones, recurrence (RRULE, RDATE, EXDATE, overrides),
  TRANSP, STATUS, SUMMARY, LOCATION, DESCRIPTION and other plain content. It drops every property that names
  people (ATTENDEE, ORGANIZER, CONTACT, anything whose value or parameters hold a ``mailto:`` address), every
  ``X-APPLE-*`` property (client housekeeping such as X-APPLE-STRUCTURED-LOCATION/-EVENT, which duplicate
  LOCATION or can carry addresses), ``X-RECURRENCE-EXCEPTION`` and iCloud's recurrence-set RELATED-TO, extra
  DTSTAMPs, and VALARMs (a blocked slot must not ring on the CRM side).
* ``merge_icloud_edit`` takes only the event content listed in :data:`CONTENT_PROPERTIES` (and the set of
  overrides) from iCloud; everything else, notably attendees/organizer and ``X-CALRELAY-*``, stays as the CRM
  had it.
* ``to_icloud`` applies the link's policies (:mod:`proxy.relay.policies`): attendees into the DESCRIPTION
  ("With: …", the default) or kept with ``SCHEDULE-AGENT=CLIENT``; a privacy title. ``to_mirror`` applies the
  availability policies (all-day events, travel time, unanswered invitations) and records them.
* ``keep_icloud_additions`` carries iCloud's default alarms over into a full-body update.
* ``content_hash`` hashes the components of the object (not the VCALENDAR's own properties, not VTIMEZONEs)
  after dropping what servers add or rewrite (:data:`HASH_IGNORED_PROPERTIES`, :data:`HASH_IGNORED_PARAMETERS`),
  with properties and components sorted, typed values re-serialised by icalendar, EXDATE/RDATE flattened into
  sets, RRULE parts sorted, and a missing DTEND read as RFC 5545's implied end.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from icalendar import Calendar, Component, Timezone, vDuration

from proxy.model import EVENT_KIND_PROPERTY, EVENT_ORIGIN_PROPERTY, EventKind, Origin
from proxy.relay.policies import AllDayMode, AttendeeMode, LinkPolicies, UnansweredMode

PRODID = "-//calrelay//relay//EN"
#: Prefix of calrelay's own properties; they never leave calrelay.
CALRELAY_PREFIX = "X-CALRELAY-"
#: Properties iCloud may add to any VEVENT (icloud.md §4) or that Apple clients use as housekeeping.
APPLE_PREFIX = "X-APPLE-"
#: Properties of people: iCloud would schedule (e-mail) them, and a mirror must not create contacts from them.
PEOPLE_PROPERTIES = frozenset({"ATTENDEE", "ORGANIZER"})
#: What a privacy title removes from an appointment before iCloud sees it.
PRIVATE_PROPERTIES = frozenset({"DESCRIPTION", "LOCATION", "URL"})
#: Starts the line naming the attendees in the DESCRIPTION (attendee mode ``description``).
WITH_PREFIX = "With: "
#: Apple's travel time before an event (a DURATION such as PT30M)
TRAVEL_PROPERTY = "X-APPLE-TRAVEL-DURATION"
#: In a mirror: the travel time that blocks before the event, and the availability policies that applied
TRAVEL_MIRROR_PROPERTY = "X-CALRELAY-TRAVEL"
POLICY_PROPERTY = "X-CALRELAY-POLICY"
#: iCloud marks the alarms it adds by itself with this property (value TRUE)
DEFAULT_ALARM_PROPERTY = "X-APPLE-DEFAULT-ALARM"
#: iCloud marks split series with this RELATED-TO type; it links iCloud's own resources, not content.
RECURRENCE_SET_RELTYPE = "X-CALENDARSERVER-RECURRENCE-SET"

#: What an iCloud edit of a CRM appointment may change (two-way, rule 9); RECURRENCE-ID identifies overrides.
CONTENT_PROPERTIES = frozenset(
    {
        "DTSTART",
        "DTEND",
        "DURATION",
        "SUMMARY",
        "LOCATION",
        "DESCRIPTION",
        "RRULE",
        "RDATE",
        "EXDATE",
        "RECURRENCE-ID",
        "TRANSP",
        "STATUS",
    }
)

#: Properties that vary between copies of the same content (timestamps, server additions, calrelay's marks).
HASH_IGNORED_PROPERTIES = frozenset(
    {"DTSTAMP", "LAST-MODIFIED", "CREATED", "SEQUENCE", "X-RECURRENCE-EXCEPTION", "ACKNOWLEDGED", "X-WR-ALARMUID"}
)
#: Parameters set by the push or by iCloud's scheduling, not by whoever wrote the event.
HASH_IGNORED_PARAMETERS = frozenset({"SCHEDULE-AGENT", "SCHEDULE-STATUS"})
#: Parameters whose values are case-insensitive enumerations (RFC 5545 §3.2), so their case must not count.
ENUMERATED_PARAMETERS = frozenset(
    {"CUTYPE", "ENCODING", "FBTYPE", "PARTSTAT", "RANGE", "RELATED", "RELTYPE", "ROLE", "RSVP"}
)
#: Date/time properties: their VALUE parameter only restates what the value's own form shows.
DATE_PROPERTIES = frozenset({"DTSTART", "DTEND", "DUE", "RECURRENCE-ID", "EXDATE", "RDATE"})
#: Properties that may be split across lines or combined with commas without changing their meaning.
SET_PROPERTIES = frozenset({"EXDATE", "RDATE"})

#: Properties that may occur at most once in a component (RFC 5545 §3.6.1, §3.6.5); DTSTAMP is left out because
#: iCloud duplicates it.
SINGLE_PROPERTIES = ("UID", "DTSTART", "DTEND", "DURATION", "RECURRENCE-ID", "TZID")

_SAFE_NAME = re.compile(r"[A-Za-z0-9._@-]{1,200}")


# --- parsing and inspection -------------------------------------------------------------------------------


def _parse(text: str) -> Calendar:
    """A VCALENDAR parsed from ``text``, or ValueError saying why it is not one."""
    try:
        calendar = Calendar.from_ical(text)
    except (ValueError, IndexError, KeyError, AttributeError, TypeError) as error:
        # icalendar's parser fails in assorted ways on malformed input (e.g. a VTIMEZONE with two TZIDs).
        raise ValueError(f"not valid iCalendar: {error}") from error
    if not isinstance(calendar, Calendar) or calendar.name != "VCALENDAR":
        raise ValueError("not an iCalendar object: the text is not a VCALENDAR")
    for component in calendar.walk():
        # icalendar keeps going past unparseable typed values; relaying them would silently lose data.
        for name, reason in component.errors:
            raise ValueError(f"not valid iCalendar: {component.name} {name}: {reason}")
        if component.name == "VTIMEZONE" and not str(component.get("TZID", "")).strip():
            raise ValueError("not valid iCalendar: a VTIMEZONE has no TZID")
        for name in SINGLE_PROPERTIES:
            if isinstance(component.get(name), list):
                raise ValueError(f"not valid iCalendar: {component.name} has more than one {name}")
            if name in DATE_PROPERTIES and name in component and not isinstance(component[name].dt, date):
                raise ValueError(f"not valid iCalendar: {component.name} {name} is not a date or date-time")
    return calendar


def _items(calendar: Calendar) -> list[Component]:
    """The calendar object's own components (everything but VTIMEZONEs)."""
    return [component for component in calendar.subcomponents if component.name != "VTIMEZONE"]


def _events(calendar: Calendar) -> list[Component]:
    """The VEVENTs of ``calendar``, or ValueError if there is none."""
    events = [component for component in calendar.subcomponents if component.name == "VEVENT"]
    if not events:
        raise ValueError("no VEVENT in the calendar object")
    return events


def _master(events: list[Component]) -> Component:
    """The series master: the VEVENT without RECURRENCE-ID, else the first (an object of overrides only)."""
    return next((event for event in events if "RECURRENCE-ID" not in event), events[0])


def _uid(calendar: Calendar) -> str:
    uids = {str(component.get("UID", "")).strip() for component in _items(calendar)}
    uids.discard("")
    if not uids:
        raise ValueError("the calendar object has no UID")
    if len(uids) > 1:
        raise ValueError(f"the calendar object has several UIDs: {', '.join(sorted(uids))}")
    return uids.pop()


def object_uid(text: str) -> str:
    """The UID shared by the components of a calendar object; ValueError if it has none or several."""
    return _uid(_parse(text))


def object_kind(text: str) -> EventKind:
    """BLOCKED if the master VEVENT says ``X-CALRELAY-KIND:BLOCKED``, else APPOINTMENT (absent = APPOINTMENT)."""
    value = _master(_events(_parse(text))).get(EVENT_KIND_PROPERTY)
    return EventKind.APPOINTMENT if value is None else EventKind.parse(str(value))


def object_origin(text: str) -> Origin:
    """Where the object was born, from the master VEVENT's ``X-CALRELAY-ORIGIN`` (absent = CRM)."""
    value = _master(_events(_parse(text))).get(EVENT_ORIGIN_PROPERTY)
    if value is None:
        return Origin.CRM
    try:
        return Origin(str(value).strip().upper())
    except ValueError:
        allowed = ", ".join(origin.value for origin in Origin)
        raise ValueError(f"unknown {EVENT_ORIGIN_PROPERTY} {str(value)!r}: use one of {allowed}") from None


def is_event_object(text: str) -> bool:
    """Whether the object holds at least one VEVENT (VTODO and VJOURNAL objects are never relayed)."""
    return any(component.name == "VEVENT" for component in _parse(text).subcomponents)


def remote_name(uid: str) -> str:
    """The resource name of ``uid`` on iCloud; the same UID always gets the same name (idempotent creates).

    Plain UIDs keep a readable ``<uid>.ics``; anything else (slashes, spaces, non-ASCII, a leading dot that
    would make a hidden file, very long UIDs) gets a sha256-based name that is safe in any URL path.
    """
    if not uid:
        raise ValueError("an empty UID has no resource name")
    if _SAFE_NAME.fullmatch(uid) and not uid.startswith("."):
        return f"{uid}.ics"
    return f"{hashlib.sha256(uid.encode('utf-8')).hexdigest()}.ics"


# --- property helpers ----------------------------------------------------------------------------------------


def _values(component: Component, name: str) -> list[Any]:
    """Every value of property ``name`` (icalendar stores repeated properties as a list)."""
    value = component.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _remove_properties(component: Component, drop: Callable[[str, Any], bool]) -> None:
    """Remove each value of each property of ``component`` for which ``drop(name, value)`` holds."""
    for name in list(component.keys()):
        values = _values(component, name)
        kept = [value for value in values if not drop(name, value)]
        if len(kept) == len(values):
            continue
        del component[name]
        if kept:
            component[name] = kept if len(kept) > 1 else kept[0]


def _ical(value: Any) -> str:
    """A property value as iCalendar text (icalendar returns bytes for most types, str for a few)."""
    raw = value.to_ical() if hasattr(value, "to_ical") else value
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def _params(value: Any) -> dict[str, Any]:
    return getattr(value, "params", None) or {}


def _is_calrelay(name: str, _value: Any = None) -> bool:
    return name.startswith(CALRELAY_PREFIX)


def _is_recurrence_set_link(name: str, value: Any) -> bool:
    return name == "RELATED-TO" and str(_params(value).get("RELTYPE", "")).upper() == RECURRENCE_SET_RELTYPE


def _names_people(name: str, value: Any) -> bool:
    """Whether a property carries somebody's address: scheduling properties, CONTACT, or any mailto: value."""
    if name in PEOPLE_PROPERTIES or name == "CONTACT":
        return True
    texts = [str(value), *(str(param) for param in _params(value).values())]
    return any("mailto:" in text.lower() for text in texts)


def _implied_end(start: date) -> date:
    """RFC 5545 §3.6.1: without DTEND or DURATION a day event lasts one day and a timed event has no length."""
    return start if isinstance(start, datetime) else start + timedelta(days=1)


def _ensure_end(event: Component) -> None:
    """Give ``event`` the DTEND RFC 5545 implies when it has neither DTEND nor DURATION (iCloud requires one)."""
    if "DTEND" in event or "DURATION" in event:
        return
    start = event.get("DTSTART")
    if start is None:
        raise ValueError(f"VEVENT {event.get('UID', '')} has no DTSTART")
    # The same parameters (TZID, VALUE=DATE) keep the end in the start's time zone and value type.
    event.add("DTEND", _implied_end(start.dt), parameters=dict(start.params))


def _ensure_timezones(calendar: Calendar) -> None:
    """Add a VTIMEZONE for each TZID in use that has none; existing VTIMEZONEs are kept as they are.

    The definitions cover the object's first year to at least icalendar's default horizon, which keeps them
    short; TZIDs unknown to zoneinfo cannot be defined and are left for the receiver to resolve.
    """
    if not calendar.get_missing_tzids():
        return
    starts = [event.decoded("DTSTART") for event in _items(calendar) if "DTSTART" in event]
    years = [start.year for start in starts] or [Timezone.DEFAULT_FIRST_DATE.year]
    first = date(min(years), 1, 1)
    last = max(Timezone.DEFAULT_LAST_DATE, date(max(years) + 2, 1, 1))
    calendar.add_missing_timezones(first_date=first, last_date=last)


def _finish(calendar: Calendar) -> str:
    """Serialise a stored/uploaded object: no METHOD (RFC 4791 §4.1), VERSION and PRODID present."""
    calendar.pop("METHOD", None)
    if "VERSION" not in calendar:
        calendar.add("VERSION", "2.0")
    if "PRODID" not in calendar:
        calendar.add("PRODID", PRODID)
    return calendar.to_ical().decode("utf-8")


# --- push, pull, merge ------------------------------------------------------------------------------------------


def to_icloud(text: str, policies: LinkPolicies | None = None, calendar_name: str = "") -> str:
    """A CRM appointment as it is PUT to iCloud (rule 6), under the link's ``policies``.

    Every VEVENT gets an end; every TZID gets a VTIMEZONE; ``METHOD`` and ``X-CALRELAY-*`` are removed.
    People: with :attr:`AttendeeMode.DESCRIPTION` (the default) ATTENDEE and ORGANIZER are removed and the
    attendees named in the DESCRIPTION ("With: …"), so iCloud has nobody to e-mail; with
    :attr:`AttendeeMode.SCHEDULE_AGENT_CLIENT`, or without ``policies`` (an iCloud-born event going back), they
    are kept with ``SCHEDULE-AGENT=CLIENT``. A privacy title replaces the SUMMARY and removes DESCRIPTION,
    LOCATION, URL and the people. Everything else (master and overrides, RRULE, EXDATE, RDATE, VALARMs,
    existing VTIMEZONEs) is sent unchanged.
    """
    calendar = _parse(text)
    _uid(calendar)
    events = _events(calendar)
    for component in calendar.walk():
        _remove_properties(component, _is_calrelay)
    for event in events:
        _ensure_end(event)
        if policies is not None and policies.private:
            event["SUMMARY"] = policies.title(str(event.get("SUMMARY", "")), calendar_name)
            _remove_properties(event, lambda name, _value: name in PRIVATE_PROPERTIES | PEOPLE_PROPERTIES)
        elif policies is not None and policies.attendees is AttendeeMode.DESCRIPTION:
            _people_into_description(event)
        for name in PEOPLE_PROPERTIES:
            for person in _values(event, name):
                person.params["SCHEDULE-AGENT"] = "CLIENT"
    _ensure_timezones(calendar)
    return _finish(calendar)


def _person(value: Any) -> str:
    address = str(value).split(":", 1)[1] if str(value).lower().startswith("mailto:") else str(value)
    name = str(_params(value).get("CN", "")).strip()
    return f"{name} <{address}>" if name else address


def _people_into_description(event: Component) -> None:
    attendees = [_person(value) for value in _values(event, "ATTENDEE")]
    _remove_properties(event, lambda name, _value: name in PEOPLE_PROPERTIES)
    if not attendees:
        return
    line = WITH_PREFIX + ", ".join(attendees)
    description = str(event.get("DESCRIPTION", "")).rstrip()
    event.pop("DESCRIPTION", None)
    event.add("DESCRIPTION", f"{description}\n\n{line}" if description else line)


def _without_with_line(description: str) -> str:
    """iCloud's DESCRIPTION without the "With: …" line the push added (it is not the CRM's text)."""
    head, separator, tail = description.rpartition(WITH_PREFIX)
    if not separator or "\n" in tail:
        return description
    return head.rstrip("\n")


def keep_icloud_additions(outgoing: str, current: str) -> str:
    """``outgoing`` (a full-body update) with the default alarms iCloud added to ``current`` carried over.

    iCloud gives a new event without a VALARM its default alarm; a full-body PUT without it would silently
    remove the user's reminder. Events that carry alarms of their own are sent as they are.
    """
    calendar = _parse(outgoing)
    added = {
        _recurrence_key(event): [alarm for alarm in event.subcomponents if is_default_alarm(alarm)]
        for event in _events(_parse(current))
    }
    changed = False
    for event in _events(calendar):
        if any(sub.name == "VALARM" for sub in event.subcomponents):
            continue
        for alarm in added.get(_recurrence_key(event), []):
            event.add_component(copy.deepcopy(alarm))
            changed = True
    return _finish(calendar) if changed else outgoing


def _mirror_drops(name: str, value: Any) -> bool:
    """What a blocked-slot mirror leaves out of an iCloud event (see the module docstring)."""
    return (
        _names_people(name, value)
        or name.startswith(APPLE_PREFIX)
        or name == "X-RECURRENCE-EXCEPTION"
        or _is_recurrence_set_link(name, value)
        or _is_calrelay(name)
    )


def _address(value: str) -> str:
    """A calendar-user address as compared: without ``mailto:``, lower case."""
    value = value.strip()
    return (value[7:] if value.lower().startswith("mailto:") else value).lower()


def to_mirror(text: str, owner_addresses: Iterable[str] = (), policies: LinkPolicies | None = None) -> str:
    """An iCloud event as the CRM's mirror stores it: a blocked slot of iCloud origin (rule 7).

    Attendees go, so the account owner's own reply would go with them: an occurrence the owner declined
    (PARTSTAT=DECLINED on an attendee whose address is one of ``owner_addresses``) is kept as TRANSP:TRANSPARENT,
    shown but not blocking, as a declined invitation does not make the owner busy.
    """
    return mirror_of(text, owner_addresses, policies)[0]


def mirror_of(source: str | Calendar, owner_addresses: Iterable[str] = (), policies: LinkPolicies | None = None
              ) -> tuple[str, str]:
    """:func:`to_mirror` of an object's text or of the object already parsed (by :func:`parse_event_object`,
    which it turns into the mirror: its last use), and the mirror's :func:`content_hash`, without parsing it
    again (an import mirrors thousands of objects)."""
    calendar = _parse(source) if isinstance(source, str) else source
    _uid(calendar)
    events = _events(calendar)
    owners = {_address(address) for address in owner_addresses}
    for event in events:
        if owners and any(
            _address(str(person)) in owners and str(person.params.get("PARTSTAT", "")).upper() == "DECLINED"
            for person in _values(event, "ATTENDEE")
        ):
            event["TRANSP"] = "TRANSPARENT"
    # Decided while the people and Apple's properties are still there; added once calrelay's own are cleared.
    marks = [_apply_availability_policies(e, owners, policies) if policies else [] for e in events]
    # Only events and their time zones are mirrored; iCloud never mixes component types in one resource.
    calendar.subcomponents = [c for c in calendar.subcomponents if c.name in ("VEVENT", "VTIMEZONE")]
    _remove_properties(calendar, _is_calrelay)
    for event, added in zip(events, marks, strict=True):
        _remove_properties(event, _mirror_drops)
        for name, value in added:
            event.add(name, value)
        stamps = _values(event, "DTSTAMP")
        if len(stamps) > 1:
            # iCloud duplicates DTSTAMP; one is what RFC 5545 allows.
            event["DTSTAMP"] = stamps[0]
        event.subcomponents = [c for c in event.subcomponents if c.name != "VALARM"]
        event.add(EVENT_KIND_PROPERTY, EventKind.BLOCKED.value)
        event.add(EVENT_ORIGIN_PROPERTY, Origin.ICLOUD.value)
    _ensure_timezones(calendar)
    return _finish(calendar), _hash(calendar)


def _apply_availability_policies(
    event: Component, owners: set[str], policies: LinkPolicies
) -> list[tuple[str, Any]]:
    """Decide how the blocked slot blocks: TRANSP is set here; returned are the travel time before the event
    (``X-CALRELAY-TRAVEL``) and the policies that applied (``X-CALRELAY-POLICY``, named by busy-reasons)."""
    applied: list[str] = []
    marks: list[tuple[str, Any]] = []
    start = event.get("DTSTART")
    if start is not None and not isinstance(start.dt, datetime) and policies.all_day is not AllDayMode.AS_MARKED:
        event["TRANSP"] = "OPAQUE" if policies.all_day is AllDayMode.ALWAYS_BUSY else "TRANSPARENT"
        applied.append(f"all-day={policies.all_day}")
    answers = {str(person.params.get("PARTSTAT", "")).upper()
               for person in _values(event, "ATTENDEE") if _address(str(person)) in owners}
    for answer, name, mode in (("NEEDS-ACTION", "unanswered", policies.unanswered),
                               ("TENTATIVE", "tentative", policies.tentative)):
        if answer in answers:
            if mode is UnansweredMode.FREE:
                event["TRANSP"] = "TRANSPARENT"
            applied.append(f"{name}={mode}")
    travel = event.get(TRAVEL_PROPERTY)
    if travel is not None and policies.travel_time_busy:
        try:
            duration = vDuration.from_ical(_ical(travel))
        except ValueError:
            duration = None
        if duration is not None and duration > timedelta(0):
            marks.append((TRAVEL_MIRROR_PROPERTY, vDuration(duration).to_ical().decode()))
            applied.append("travel-time")
    if applied:
        marks.append((POLICY_PROPERTY, ",".join(applied)))
    return marks


def _recurrence_key(event: Component) -> str:
    """Identifies an event within its object: '' for the master, else the instant its RECURRENCE-ID names.

    Instants, not text, because iCloud and the CRM may write the same occurrence in different time zones.
    """
    recurrence_id = event.get("RECURRENCE-ID")
    if recurrence_id is None:
        return ""
    moment = recurrence_id.dt
    if isinstance(moment, datetime) and moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.isoformat()


def merge_icloud_edit(crm_text: str, icloud_text: str, policies: LinkPolicies | None = None) -> str:
    """The CRM's copy of an appointment after an iCloud edit (two-way, rule 9).

    The event content (:data:`CONTENT_PROPERTIES`), the set of overrides and the VTIMEZONEs come from iCloud;
    the UID, attendees/organizer exactly as the CRM wrote them, ``X-CALRELAY-*`` and every other property and
    alarm come from the CRM copy. An override that only iCloud has starts from the CRM master's data.
    """
    crm = _parse(crm_text)
    icloud = _parse(icloud_text)
    uid, icloud_uid = _uid(crm), _uid(icloud)
    if uid != icloud_uid:
        raise ValueError(f"cannot merge different events: CRM UID {uid!r}, iCloud UID {icloud_uid!r}")
    crm_events = {_recurrence_key(event): event for event in _events(crm)}
    crm_master = _master(list(crm_events.values()))
    # Under a privacy title iCloud only ever saw a stand-in title and no text: those stay the CRM's.
    private = PRIVATE_PROPERTIES | {"SUMMARY"} if policies is not None and policies.private else frozenset()
    taken = CONTENT_PROPERTIES - private
    merged: list[Component] = []
    for edited in _events(icloud):
        event = copy.deepcopy(crm_events.get(_recurrence_key(edited), crm_master))
        _remove_properties(event, lambda name, _value: name in taken)
        for name in sorted(taken):
            for value in _values(edited, name):
                if name == "DESCRIPTION" and policies is not None:
                    value = _without_with_line(str(value))
                    if not value:
                        continue
                event.add(name, value)
        merged.append(event)
    timezones = {str(tz["TZID"]): tz for tz in crm.walk("VTIMEZONE")}
    timezones.update({str(tz["TZID"]): tz for tz in icloud.walk("VTIMEZONE")})
    result = Calendar()
    for name, value in crm.items():
        result[name] = value
    result.subcomponents = merged
    used = result.get_used_tzids()
    result.subcomponents = [tz for tzid, tz in timezones.items() if tzid in used] + merged
    _ensure_timezones(result)
    return _finish(result)


# --- change detection ----------------------------------------------------------------------------------------


def _hash_ignores(component: Component, name: str, value: Any) -> bool:
    if name in HASH_IGNORED_PROPERTIES or name.startswith(APPLE_PREFIX) or _is_calrelay(name):
        return True
    if _is_recurrence_set_link(name, value):
        return True
    # Servers give alarms their own UID (RFC 9074), like X-WR-ALARMUID: housekeeping, not content.
    return component.name == "VALARM" and name == "UID"


def _canonical_params(name: str, value: Any) -> list[list[str]]:
    params = []
    for key, param in _params(value).items():
        key = key.upper()
        if key in HASH_IGNORED_PARAMETERS or (key == "VALUE" and name in DATE_PROPERTIES):
            continue
        text = ",".join(sorted(str(item) for item in param)) if isinstance(param, list) else str(param)
        params.append([key, text.upper() if key in ENUMERATED_PARAMETERS else text])
    return sorted(params)


def _canonical_values(name: str, value: Any) -> Iterator[str]:
    """The serialised value(s) of one property line, in a form that does not depend on how it was written."""
    if name in SET_PROPERTIES:
        for item in value.dts:
            yield _ical(item)
        return
    text = _ical(value)
    if name == "RRULE":
        # Part order and the order within BYxxx lists carry no meaning.
        parts = (part.split("=", 1) for part in text.split(";"))
        text = ";".join(sorted(f"{key.upper()}={','.join(sorted(val.split(',')))}" for key, val in parts))
    elif name in PEOPLE_PROPERTIES and text.lower().startswith("mailto:"):
        text = text.lower()  # addresses compare case-insensitively, as CalDAV servers do
    yield text


def is_default_alarm(component: Component) -> bool:
    """iCloud's default alarm (CCS ``processAlarms``): added by the server, not by whoever wrote the event."""
    return component.name == "VALARM" and str(component.get(DEFAULT_ALARM_PROPERTY, "")).upper() == "TRUE"


def _canonical_component(component: Component) -> list[Any]:
    if component.name == "VEVENT" and "DTEND" not in component and "DURATION" not in component:
        # Hashed as if it had the end RFC 5545 implies; a shallow copy gets it, so the object is left as it was.
        component = copy.copy(component)
        _ensure_end(component)
    lines: set[str] = set()
    for name in component:
        for value in _values(component, name):
            if _hash_ignores(component, name, value):
                continue
            params = _canonical_params(name, value)
            for text in _canonical_values(name, value):
                lines.add(json.dumps([name, params, text]))
    children = sorted(
        json.dumps(_canonical_component(child)) for child in component.subcomponents if not is_default_alarm(child)
    )
    return [component.name, sorted(lines), children]


def content_hash(text: str) -> str:
    """A sha256 hex digest of what matters in a calendar object, equal for both sides' copies of one event.

    It ignores serialisation (property and parameter order, folding, line endings, case of names and of
    enumerated values), the VCALENDAR's own properties, VTIMEZONEs (the TZIDs on properties still count) and
    what servers or the push add or rewrite: see :data:`HASH_IGNORED_PROPERTIES`,
    :data:`HASH_IGNORED_PARAMETERS`, ``X-APPLE-*``, ``X-CALRELAY-*``, iCloud's recurrence-set RELATED-TO and its
    default alarms (``X-APPLE-DEFAULT-ALARM:TRUE``), so iCloud's own changes never look like an edit.
    """
    calendar = _parse(text)
    _uid(calendar)
    _events(calendar)
    return _hash(calendar)


def parse_event_object(text: str) -> Calendar | None:
    """The parsed calendar object, or None when it holds no VEVENT (ValueError when it is no iCalendar)."""
    calendar = _parse(text)
    return calendar if any(component.name == "VEVENT" for component in calendar.subcomponents) else None


def uid_and_hash(calendar: Calendar) -> tuple[str, str]:
    """:func:`object_uid` and :func:`content_hash` of a parsed event object (left as it is)."""
    return _uid(calendar), _hash(calendar)


def _hash(calendar: Calendar) -> str:
    canonical = sorted(json.dumps(_canonical_component(component)) for component in _items(calendar))
    return hashlib.sha256("\n".join(canonical).encode("utf-8")).hexdigest()
