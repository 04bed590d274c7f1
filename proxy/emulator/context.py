"""Shared per-emulator state and the typed aiohttp application keys.

One :class:`Emulator` backs both listening ports (the discovery host and the partition host); each port has
its own aiohttp application that knows its role.
"""

from __future__ import annotations

import secrets
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from aiohttp import web

from proxy.emulator.faults import FaultState
from proxy.emulator.mail import MailLog
from proxy.emulator.store import Store

Role = Literal["discovery", "partition"]


#: requests kept in ``Emulator.request_log``
REQUEST_LOG_SIZE = 10_000

_BOOLEAN_OPTIONS = (
    "sync_token_error_element",
    "home_on_partition_only",
    "default_alarms",
    "timezones_by_reference",
    "query_limits",
    "implicit_scheduling",
    "encode_at_in_hrefs",
)
_NUMBER_OPTIONS = (
    "min_date_days",
    "max_date_days",
    "max_query_results",
    "max_multiget_hrefs",
    "sync_token_lifetime_days",
)


@dataclass
class EmulatorOptions:
    """Switches for the places where iCloud's behaviour is uncertain or varies (checklist [?] items).

    They can be given at start and changed at run time through ``POST /_emulator/options``.
    """

    #: ``multistatus``: /.well-known/caldav answers 207 like the principal; ``redirect``: 301 to ``/``
    well_known: Literal["multistatus", "redirect"] = "multistatus"
    #: None: the discovery host does not redirect /<DSID>/calendars/; 301 or 302: it redirects to the partition
    home_redirect: int | None = None
    #: True: calendar homes answer only on the partition host (the discovery host says 404), so a client that
    #: keeps talking to the discovery host after discovery fails as it would against iCloud. False: both serve.
    home_on_partition_only: bool = True
    #: status for a calendar-query whose filter has only the VCALENDAR comp-filter: 400, or 403 with a
    #: CalDAV precondition element
    vcalendar_filter_status: int = 400
    #: include ``<valid-sync-token/>`` in the 403 for an unknown sync token (iCloud sends a bare 403)
    sync_token_error_element: bool = False
    #: a Host header naming one of these answers 501, like the apex icloud.com CDN does
    apex_hosts: tuple[str, ...] = ("icloud.com", "icloud.test")
    # The switches below come from Apple's CalendarServer (CCS), iCloud's ancestor; docs/emulator.md says
    # which rest on CCS's code alone. Each is on by default, so the relay is tested against them.
    #: a new VEVENT without a VALARM gets the account's default alarm (CCS ``EnableDefaultAlarms``)
    default_alarms: bool = True
    #: VTIMEZONEs of standard (IANA) zones are stripped on PUT (CCS ``EnableTimezonesByReference``)
    timezones_by_reference: bool = True
    #: time-range queries limited to ``min_date_days`` back and ``max_date_days`` ahead (403
    #: ``CALDAV:min-date-time`` / ``max-date-time``); calendar-query with data limited to
    #: ``max_query_results`` (403 ``DAV:number-of-matches-within-limits``), multiget to ``max_multiget_hrefs``
    query_limits: bool = True
    min_date_days: int = 365
    max_date_days: int = 5 * 366
    max_query_results: int = 1000
    max_multiget_hrefs: int = 5000
    #: a sync token naming a revision older than this many days is refused with the bare 403
    #: (CCS ``SyncTokenLifetimeDays``); 0 keeps tokens forever
    sync_token_lifetime_days: float = 14.0
    #: server-side implicit scheduling as CCS does it: ``SCHEDULE-AGENT=CLIENT`` is removed from the ORGANIZER
    #: and from attendees hosted on iCloud (who are then invited), and an attendee's DELETE sends a REPLY
    implicit_scheduling: bool = True
    #: hrefs spell ``@`` in object and calendar names as ``%40``
    encode_at_in_hrefs: bool = True

    def update(self, changes: dict[str, Any]) -> None:
        known = {option.name for option in fields(self)}
        for key in changes:
            if key not in known:
                raise ValueError(f"unknown option {key!r}; known: {', '.join(sorted(known))}")
        well_known = changes.get("well_known", self.well_known)
        if well_known not in ("multistatus", "redirect"):
            raise ValueError("well_known must be 'multistatus' or 'redirect'")
        home_redirect = changes.get("home_redirect", self.home_redirect)
        if home_redirect not in (None, 301, 302):
            raise ValueError("home_redirect must be null, 301 or 302")
        if changes.get("vcalendar_filter_status", self.vcalendar_filter_status) not in (400, 403):
            raise ValueError("vcalendar_filter_status must be 400 or 403")
        for key in _BOOLEAN_OPTIONS:
            if not isinstance(changes.get(key, False), bool):
                raise ValueError(f"{key} must be true or false")
        for key in _NUMBER_OPTIONS:
            value = changes.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a number that is not negative")
        for key, value in changes.items():
            setattr(self, key, tuple(value) if key == "apex_hosts" else value)

    def as_dict(self) -> dict[str, Any]:
        return {option.name: getattr(self, option.name) for option in fields(self)}


@dataclass
class Emulator:
    store: Store
    options: EmulatorOptions = field(default_factory=EmulatorOptions)
    faults: FaultState = field(default_factory=FaultState)
    mail: MailLog = field(default_factory=MailLog)
    #: filled in once both ports are bound (``http://host:port/``)
    discovery_url: str = ""
    partition_url: str = ""
    #: requests seen per outcome ("served", "throttle", "error", "drop"): tests count what a client sent
    requests: Counter[str] = field(default_factory=Counter)
    #: (method, path, Host) of the latest requests, oldest first: tests count what a client asked for
    request_log: deque[tuple[str, str, str]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    #: monotonic times of throttled answers: tests check a client's retries are spaced out
    throttled_at: list[float] = field(default_factory=list)
    #: the hex in ``Server: AppleHttpServer/<hex>``
    server_build: str = field(default_factory=lambda: secrets.token_hex(20))


EMULATOR = web.AppKey("emulator", Emulator)
ROLE = web.AppKey("role", str)
