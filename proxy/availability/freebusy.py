"""CalDAV ``free-busy-query`` REPORT on a user's calendar, answered from the instance index.

Radicale has its own free-busy report, but it reads floating times and all-day dates as UTC and does not know
whose attendee entry was declined, so it would disagree with the JSON API. Floating times and dates are read
in the request's time zone (``CALDAV:timezone`` or ``CALDAV:timezone-id``), else the calendar's
``CALDAV:calendar-timezone``, else the user's own zone (:mod:`proxy.user_settings`) or the configured one, as
RFC 4791 §9.9 says (:mod:`.zones`).

This middleware answers the query on a calendar collection with the same computation as the API, restricted to
that calendar. Anything it does
not handle (other REPORTs, open-ended or oversized ranges, other paths, callers without access to the owner)
goes on to the engine unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import defusedxml.ElementTree as DefusedET
import icalendar
from aiohttp import web

from proxy.auth import PRINCIPAL_REQUEST_KEY
from proxy.availability.index import AvailabilityIndex, BudgetExceeded
from proxy.availability.intervals import BusyInterval
from proxy.availability.service import AvailabilityService, Freshness, UserView
from proxy.availability.zones import CALENDAR_TIMEZONE_PROP, requested_zone, zone_of_vtimezone
from proxy.engine import Engine
from proxy.keys import ENGINE, SETTINGS

log = logging.getLogger(__name__)

_CALDAV = "{urn:ietf:params:xml:ns:caldav}"
_UTC_FORMAT = "%Y%m%dT%H%M%SZ"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_freebusy_query(body: bytes) -> tuple[datetime, datetime] | None:
    """The time range of a ``free-busy-query`` body, or None if it is not one with a closed UTC range."""
    root = _parse(body)
    return freebusy_window(root) if root is not None else None


def _parse(body: bytes) -> ET.Element | None:
    try:
        return DefusedET.fromstring(body)
    except Exception:  # not our concern: the engine reports malformed XML
        return None


def freebusy_window(root: ET.Element) -> tuple[datetime, datetime] | None:
    """The time range of a parsed ``free-busy-query``, or None if it is not one with a closed UTC range."""
    if root.tag != _CALDAV + "free-busy-query":
        return None
    time_range = root.find(_CALDAV + "time-range")
    if time_range is None or "start" not in time_range.attrib or "end" not in time_range.attrib:
        return None
    try:
        start = datetime.strptime(time_range.attrib["start"], _UTC_FORMAT).replace(tzinfo=UTC)
        end = datetime.strptime(time_range.attrib["end"], _UTC_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return (start, end) if start < end else None


def render_freebusy(busy: list[BusyInterval], start: datetime, end: datetime, stale: bool) -> bytes:
    calendar = icalendar.Calendar()
    calendar.add("PRODID", "-//calrelay//availability//EN")
    calendar.add("VERSION", "2.0")
    freebusy = icalendar.FreeBusy()
    freebusy.add("DTSTAMP", datetime.now(UTC).replace(microsecond=0))
    freebusy.add("DTSTART", start)
    freebusy.add("DTEND", end)
    if stale:
        # Not standard, but tells a reader that this mirror may be missing busy time.
        freebusy.add("X-CALRELAY-STALE", "TRUE")
    for interval in busy:
        freebusy.add("FREEBUSY", (interval.start, interval.end), parameters={"FBTYPE": "BUSY"})
    calendar.add_component(freebusy)
    return calendar.to_ical()


def _calendar_zone(engine: Engine, user: str, path: str) -> ZoneInfo | None:
    """The zone of the calendar's CALDAV:calendar-timezone, or None (unset or not an IANA zone)."""
    for calendar in engine.list_calendars(user):
        text = calendar.props.get(CALENDAR_TIMEZONE_PROP) if calendar.path == path else None
        if text:
            try:
                return zone_of_vtimezone(text)
            except ValueError as error:
                log.warning("%s: calendar-timezone not used for free-busy: %s", path, error)
    return None


def make_freebusy_middleware(
    index_key: web.AppKey[AvailabilityIndex],
    view_of: Callable[[web.Application, str], Awaitable[UserView]],
    freshness_of: Callable[[web.Application, str], Freshness],
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def freebusy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "REPORT":
            return await handler(request)
        segments = request.path.strip("/").split("/")
        principal = request.get(PRINCIPAL_REQUEST_KEY)
        if len(segments) != 2 or principal is None or not principal.may_access(segments[0]):
            return await handler(request)
        body = await request.read()  # cached by aiohttp: the engine reads the same bytes if we pass
        root = _parse(body) if b"free-busy-query" in body else None
        window = freebusy_window(root) if root is not None else None
        max_days = request.app[SETTINGS].availability.max_window_days
        if root is None or window is None or window[1] - window[0] > timedelta(days=max_days):
            return await handler(request)
        user, path = segments[0], f"/{segments[0]}/{segments[1]}/"
        try:
            zone = requested_zone(root)
        except ValueError as error:
            return web.Response(status=400, text=f"free-busy-query: {error}\n")
        view = await view_of(request.app, user)
        # RFC 4791 §9.9: floating times are local times of the request's zone, else the calendar's own.
        zone = zone or await request.app[ENGINE].call(_calendar_zone, request.app[ENGINE], user, path)
        if zone is not None:
            view = dataclasses.replace(view, zone=zone)
        service = AvailabilityService(request.app[ENGINE], request.app[index_key])
        try:
            answer = await request.app[ENGINE].call(
                service.availability,
                view,
                window[0],
                window[1],
                freshness_of(request.app, user),
                None,
                frozenset({path}),
            )
        except BudgetExceeded as exc:
            return web.Response(status=422, text=f"{exc}\n")
        if not answer.snapshot.sources:  # not a calendar of this user: let the engine answer (404, 403…)
            return await handler(request)
        log.debug("free-busy-query on %s answered from the instance index", path)
        body = render_freebusy(answer.busy, window[0], window[1], bool(answer.snapshot.stale_paths))
        return web.Response(status=200, body=body, content_type="text/calendar", charset="utf-8")

    return freebusy_middleware
