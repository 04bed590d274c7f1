"""Per-link policies users ask for (pure): what iCloud sees of an appointment, and what blocks availability.

A link's policies are a small JSON object in the state database (``relay_links.policies``); :func:`parse`
checks one and fills in the defaults, so a link made before policies existed behaves as the defaults say.

The availability policies (:data:`AVAILABILITY_POLICIES`) may also be set per linked iCloud calendar, each
calendar taking the link's for what it does not set: a family calendar whose all-day events should block, a
work calendar whose unanswered invitations should not. They are kept in the same JSON object, under
``"calendars"`` (calendar name -> the policies it sets itself), read by :func:`policy_set`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any


class AttendeeMode(StrEnum):
    #: attendees are written into the DESCRIPTION ("With: …") and not sent as ATTENDEE properties: iCloud
    #: cannot e-mail anyone
    DESCRIPTION = "description"
    #: ATTENDEE properties are kept with SCHEDULE-AGENT=CLIENT; iCloud still invites addresses it hosts
    #: (@icloud.com, @me.com, @mac.com, other iCloud accounts)
    SCHEDULE_AGENT_CLIENT = "schedule-agent-client"


class AllDayMode(StrEnum):
    #: an all-day event blocks as its TRANSP says (Apple creates all-day events as TRANSPARENT, i.e. free)
    AS_MARKED = "as-marked"
    ALWAYS_BUSY = "always-busy"
    NEVER_BUSY = "never-busy"


class UnansweredMode(StrEnum):
    """What an invitation not answered yet (``PARTSTAT=NEEDS-ACTION`` for the account) does to availability;
    also what one answered "maybe" (``PARTSTAT=TENTATIVE``) does (policy ``tentative``)."""

    BUSY = "busy"
    FREE = "free"


#: the privacy template that sends the full event
FULL_EVENT = ""
TEMPLATE_FIELDS = ("title", "calendar")


@dataclass(frozen=True)
class LinkPolicies:
    attendees: AttendeeMode = AttendeeMode.DESCRIPTION
    #: "" sends the full event; otherwise the SUMMARY iCloud sees (``{title}``, ``{calendar}``, or fixed text
    #: such as "Busy"), and DESCRIPTION, LOCATION and URL are removed
    privacy_title: str = FULL_EVENT
    all_day: AllDayMode = AllDayMode.AS_MARKED
    #: ``X-APPLE-TRAVEL-DURATION`` before an iCloud event counts as busy
    travel_time_busy: bool = True
    unanswered: UnansweredMode = UnansweredMode.BUSY
    #: an invitation the account answered "maybe" (``PARTSTAT=TENTATIVE``)
    tentative: UnansweredMode = UnansweredMode.BUSY

    def as_dict(self) -> dict[str, Any]:
        return {key: str(value) if isinstance(value, StrEnum) else value for key, value in asdict(self).items()}

    @property
    def private(self) -> bool:
        return self.privacy_title != FULL_EVENT

    def title(self, title: str, calendar: str) -> str:
        return self.privacy_title.format(title=title, calendar=calendar)


_ENUMS: dict[str, type[StrEnum]] = {"attendees": AttendeeMode, "all_day": AllDayMode, "unanswered": UnansweredMode,
                                    "tentative": UnansweredMode}
#: the policies a linked calendar may set for itself: how its events block availability
AVAILABILITY_POLICIES = ("all_day", "travel_time_busy", "unanswered", "tentative")
#: the key of the per-calendar policies in a link's JSON
CALENDARS_KEY = "calendars"


def parse(raw: dict[str, Any] | None, base: LinkPolicies | None = None) -> LinkPolicies:
    """Policies from JSON (unknown keys and bad values raise ValueError naming the fix); missing keys keep
    ``base`` (the configured defaults)."""
    values = (base or LinkPolicies()).as_dict()
    known = {item.name for item in fields(LinkPolicies)}
    for key, value in (raw or {}).items():
        if key not in known:
            raise ValueError(f"unknown policy {key!r}; known: {', '.join(sorted(known))}")
        values[key] = value
    result: dict[str, Any] = {}
    for key, value in values.items():
        if key in _ENUMS:
            choices = [str(member) for member in _ENUMS[key]]
            if value not in choices:
                raise ValueError(f"policy {key} must be one of {', '.join(choices)}, not {value!r}")
            result[key] = _ENUMS[key](value)
        elif key == "travel_time_busy":
            if not isinstance(value, bool):
                raise ValueError("policy travel_time_busy must be true or false")
            result[key] = value
        else:
            result[key] = _checked_template(value)
    return LinkPolicies(**result)


def from_json(text: str, base: LinkPolicies | None = None) -> LinkPolicies:
    """A link's stored policies; they were checked when saved, so a bad value here is a bug, not input."""
    return policy_set(text, base).link


def availability(policies: LinkPolicies) -> dict[str, Any]:
    """The availability part of a set of policies, as JSON."""
    values = policies.as_dict()
    return {key: values[key] for key in AVAILABILITY_POLICIES}


def check_calendar_overrides(name: str, raw: Any) -> dict[str, Any]:
    """One calendar's own policies, checked (errors name the calendar and the fix); returned as JSON."""
    if not isinstance(raw, dict):
        raise ValueError(f"the policies of calendar {name!r} must be an object such as {{\"all_day\": "
                         "\"always-busy\"}")
    for key in raw:
        if key not in AVAILABILITY_POLICIES:
            if key in _LINK_FIELDS:
                raise ValueError(f"policy {key} is the link's (what calrelay writes to the primary calendar), not "
                                 f"one calendar's: set it on the link. A calendar may set "
                                 f"{', '.join(AVAILABILITY_POLICIES)}")
            raise ValueError(f"unknown policy {key!r} for calendar {name!r}; a calendar may set "
                             f"{', '.join(AVAILABILITY_POLICIES)}")
    try:
        checked = parse(raw).as_dict()
    except ValueError as error:
        raise ValueError(f"calendar {name!r}: {error}") from None
    return {key: checked[key] for key in raw}


_LINK_FIELDS = {item.name for item in fields(LinkPolicies)}


@dataclass(frozen=True)
class PolicySet:
    """A link's policies and the availability policies its calendars set for themselves."""

    link: LinkPolicies
    #: calendar name -> the policies it sets (checked JSON values); absent keys come from the link
    calendars: dict[str, dict[str, Any]]

    def for_calendar(self, name: str) -> LinkPolicies:
        own = self.calendars.get(name)
        return parse(own, self.link) if own else self.link

    def as_json(self) -> str:
        values: dict[str, Any] = self.link.as_dict()
        if self.calendars:
            values[CALENDARS_KEY] = {name: dict(own) for name, own in sorted(self.calendars.items()) if own}
        return json.dumps(values)


def policy_set(text: str, base: LinkPolicies | None = None) -> PolicySet:
    """A link's stored policies with its calendars' own (``"calendars"``)."""
    raw = json.loads(text or "{}")
    calendars = raw.pop(CALENDARS_KEY, None) or {}
    return PolicySet(parse(raw, base), {name: check_calendar_overrides(name, own) for name, own in calendars.items()})


def _checked_template(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise ValueError("policy privacy_title must be a text of at most 200 characters ('' = the full event)")
    try:
        value.format(**dict.fromkeys(TEMPLATE_FIELDS, ""))
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(
            f"policy privacy_title may use only {{title}} and {{calendar}} (write {{{{ for a brace): {error}"
        ) from None
    return value
