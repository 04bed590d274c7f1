"""The zone floating times are read in for a free-busy REPORT (RFC 4791 §9.9), from iCalendar time zones.

A request's ``CALDAV:timezone`` (a VCALENDAR with one VTIMEZONE) or RFC 7809 ``CALDAV:timezone-id`` comes
first, then the calendar's ``CALDAV:calendar-timezone`` property; without either, the configured
``[availability] timezone``. A VTIMEZONE is mapped to the IANA zone it names (its TZID, its
X-LIC-LOCATION, or the IANA name at the end of a vendor TZID such as ``/mozilla.org/…/Europe/Berlin``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar

_CALDAV = "{urn:ietf:params:xml:ns:caldav}"
#: How the calendar-timezone property is stored by Radicale.
CALENDAR_TIMEZONE_PROP = "C:calendar-timezone"


def iana_zone(name: str) -> ZoneInfo | None:
    """The IANA zone ``name`` denotes, trying the trailing one or two segments of a vendor-prefixed name."""
    name = name.strip().strip('"')
    segments = [s for s in name.split("/") if s]
    for candidate in (name, "/".join(segments[-2:]), "/".join(segments[-3:]), segments[-1] if segments else ""):
        if not candidate or candidate.startswith(".") or ".." in candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return None


def zone_of_vtimezone(text: str) -> ZoneInfo:
    """The IANA zone of the first VTIMEZONE in ``text``. Raises ValueError saying what is wrong."""
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except ValueError as error:
        raise ValueError(f"the time zone is not an iCalendar object: {error}") from None
    for component in calendar.walk("VTIMEZONE"):
        for name in (component.get("X-LIC-LOCATION"), component.get("TZID")):
            zone = iana_zone(str(name)) if name else None
            if zone is not None:
                return zone
        raise ValueError(f"the VTIMEZONE {component.get('TZID')!s} does not name an IANA time zone")
    raise ValueError("the time zone holds no VTIMEZONE")


def requested_zone(root: ET.Element) -> ZoneInfo | None:
    """The zone a free-busy-query body asks for, or None. Raises ValueError for one that is unusable."""
    tzid = root.find(_CALDAV + "timezone-id")
    if tzid is not None:
        zone = iana_zone(tzid.text or "")
        if zone is None:
            raise ValueError(f"CALDAV:timezone-id {tzid.text!r} is not an IANA time zone")
        return zone
    timezone = root.find(_CALDAV + "timezone")
    if timezone is not None:
        return zone_of_vtimezone(timezone.text or "")
    return None
