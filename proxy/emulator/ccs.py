"""What iCloud's CalendarServer heritage does to a stored object on PUT, as pure functions on a parsed calendar.

Apple's open-source CalendarServer (CCS) adds the account's default alarm to a new event without one
(``processAlarms``, ``EnableDefaultAlarms``), strips the VTIMEZONEs of zones it knows
(``EnableTimezonesByReference``) and, doing scheduling itself, removes ``SCHEDULE-AGENT=CLIENT`` where it
insists on scheduling (the ORGANIZER, attendees it hosts). Each function says whether it changed anything, so
the PUT handler knows whether the stored body differs from the one it was sent.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from datetime import timedelta
from functools import cache

from icalendar import Alarm, Calendar

#: domains whose addresses iCloud hosts, so it schedules them itself whatever the client asks
ICLOUD_DOMAINS = ("icloud.com", "me.com", "mac.com")
#: the account's default alarm for timed events (iCloud's factory setting: 15 minutes before)
DEFAULT_ALARM_TRIGGER = timedelta(minutes=-15)


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def strip_standard_timezones(calendar: Calendar) -> bool:
    """Drop VTIMEZONEs whose TZID is a standard zone; clients look those up by name."""
    known = _known_zones()
    kept = [c for c in calendar.subcomponents if not (c.name == "VTIMEZONE" and str(c.get("TZID", "")) in known)]
    changed = len(kept) != len(calendar.subcomponents)
    calendar.subcomponents[:] = kept
    return changed


def add_default_alarms(calendar: Calendar) -> bool:
    """Give each VEVENT without a VALARM the default alarm, marked ``X-APPLE-DEFAULT-ALARM:TRUE``."""
    changed = False
    for event in calendar.subcomponents:
        if event.name != "VEVENT" or any(sub.name == "VALARM" for sub in event.subcomponents):
            continue
        alarm = Alarm()
        alarm.add("ACTION", "DISPLAY")
        alarm.add("DESCRIPTION", "Event reminder")
        alarm.add("TRIGGER", DEFAULT_ALARM_TRIGGER)
        alarm.add("X-WR-ALARMUID", f"default-{event.get('UID', '')}")
        alarm.add("X-APPLE-DEFAULT-ALARM", "TRUE")
        event.add_component(alarm)
        changed = True
    return changed


def address_of(value: object) -> str:
    return str(value).split(":", 1)[1] if str(value).lower().startswith("mailto:") else str(value)


def hosted_on_icloud(address: str, account_addresses: Iterable[str]) -> bool:
    lowered = address.lower()
    if lowered in {a.lower() for a in account_addresses}:
        return True
    return lowered.rsplit("@", 1)[-1] in ICLOUD_DOMAINS


def enforce_server_scheduling(calendar: Calendar, hosted_addresses: Iterable[str]) -> bool:
    """Remove ``SCHEDULE-AGENT=CLIENT`` from the ORGANIZER and from attendees hosted on iCloud."""
    hosted = tuple(hosted_addresses)
    changed = False
    for item in calendar.subcomponents:
        if item.name not in ("VEVENT", "VTODO"):
            continue
        organizer = item.get("ORGANIZER")
        if organizer is not None and "SCHEDULE-AGENT" in organizer.params:
            del organizer.params["SCHEDULE-AGENT"]
            changed = True
        attendees = item.get("ATTENDEE", [])
        for attendee in attendees if isinstance(attendees, list) else [attendees]:
            agent = str(attendee.params.get("SCHEDULE-AGENT", "")).upper()
            if agent == "CLIENT" and hosted_on_icloud(address_of(attendee), hosted):
                del attendee.params["SCHEDULE-AGENT"]
                changed = True
    return changed


def organizer_to_reply(calendar: Calendar, own_addresses: Iterable[str]) -> str | None:
    """The organizer a REPLY (decline) goes to when this account, an attendee, deletes the event."""
    own = {a.lower() for a in own_addresses}
    for item in calendar.subcomponents:
        if item.name not in ("VEVENT", "VTODO"):
            continue
        organizer = item.get("ORGANIZER")
        if organizer is None or address_of(organizer).lower() in own:
            return None
        attendees = item.get("ATTENDEE", [])
        if any(address_of(a).lower() in own for a in (attendees if isinstance(attendees, list) else [attendees])):
            return address_of(organizer)
    return None
