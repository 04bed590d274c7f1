"""The vocabulary of the CRM contract (design §2): calendar kinds, event kinds, and where they are stored.

Pure definitions shared by the storage plugin, the relay and the availability engine.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)

#: Collection property (Clark notation, as Radicale stores it) that holds a booking calendar's kind.
CALENDAR_KIND_PROP = "{urn:calrelay}calendar-kind"
#: Collection property marking a mirror of an iCloud calendar: its value is the mirror's role.
MIRROR_ROLE_PROP = "{urn:calrelay}mirror-role"
#: Collection property of a mirror: the URL of the iCloud calendar it mirrors.
MIRROR_SOURCE_PROP = "{urn:calrelay}mirror-source"
#: Collection property of a mirror: "false" when its events do not block availability (a primary calendar
#: explicitly excluded from the conflict calendars, rule 3); absent or "true" means they block.
MIRROR_BLOCKS_PROP = "{urn:calrelay}mirror-blocks"
#: Collection property of a mirror: the availability policies its events were mirrored under (JSON,
#: proxy.relay.policies.availability), reported with availability answers.
MIRROR_POLICIES_PROP = "{urn:calrelay}mirror-policies"
#: RFC 6638 §9.1 CALDAV:schedule-calendar-transp as stored (text "opaque" or "transparent", see
#: proxy.interop.transp): a transparent calendar never blocks availability.
SCHEDULE_TRANSP_PROP = "C:schedule-calendar-transp"

#: iCalendar properties calrelay uses on VEVENTs.
EVENT_KIND_PROPERTY = "X-CALRELAY-KIND"
EVENT_ORIGIN_PROPERTY = "X-CALRELAY-ORIGIN"


def _member(kind: type[E], value: str, normalised: str, what: str) -> E:
    try:
        return kind(normalised)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValueError(f"unknown {what} {value!r}: use one of {allowed}") from None


class CalendarKind(StrEnum):
    ROUND_ROBIN = "round-robin"
    COLLECTIVE = "collective"
    CLASS_BOOKING = "class-booking"
    SERVICE = "service"
    SIMPLE = "simple"

    @property
    def integrates(self) -> bool:
        """Rule 1: only Round Robin, Collective, Class Booking and Service calendars reach iCloud."""
        return self is not CalendarKind.SIMPLE

    @classmethod
    def parse(cls, value: str) -> CalendarKind:
        """The kind named by ``value`` (case-insensitive), or ValueError naming the allowed values."""
        return _member(cls, value, value.strip().lower(), "calendar kind")


class EventKind(StrEnum):
    APPOINTMENT = "APPOINTMENT"
    BLOCKED = "BLOCKED"

    @classmethod
    def parse(cls, value: str) -> EventKind:
        return _member(cls, value, value.strip().upper(), EVENT_KIND_PROPERTY)


class MirrorRole(StrEnum):
    """What a mirror collection of an iCloud calendar is for (rules 3 and 4)."""

    PRIMARY = "primary"  # calrelay writes appointments there and reads all its events
    CONFLICT = "conflict"  # read only; its events block availability


class Origin(StrEnum):
    CRM = "CRM"
    ICLOUD = "ICLOUD"
