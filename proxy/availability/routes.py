"""The availability JSON API: ``/api/v1/users/{user}/availability`` and ``…/busy-reasons``.

Handlers only parse, authorize and render; the work runs in the engine's thread pool
(:class:`~proxy.availability.service.AvailabilityService`), because it may read storage.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from proxy.api import json_error, require_access
from proxy.availability.freebusy import make_freebusy_middleware
from proxy.availability.index import AvailabilityIndex, BudgetExceeded
from proxy.availability.instances import Instance, normalize_address
from proxy.availability.intervals import BusyInterval
from proxy.availability.service import AvailabilityService, Freshness, Snapshot, UserView
from proxy.availability.sources import FreshnessProvider, SourceStatus
from proxy.keys import ENGINE, SETTINGS
from proxy.user_settings import requested_zone, zone_of

log = logging.getLogger(__name__)

#: Set by the relay: per user, what it knows about each mirror's last pull. Optional.
FRESHNESS = web.AppKey("calrelay.availability.freshness", FreshnessProvider)
#: ``(user) -> calendar-user addresses`` used to recognise the user's own attendee entries. Optional; by
#: default a user whose name is an e-mail address has that address.
USER_ADDRESSES = web.AppKey("calrelay.availability.user_addresses", Callable[[str], Iterable[str]])
#: The reader of the instance index shared by every request (created by :func:`setup_routes`).
INDEX = web.AppKey("calrelay.availability.index", AvailabilityIndex)

#: Longest free slot one may ask for: a week.
MAX_SLOT_MINUTES = 7 * 24 * 60


def setup_routes(app: web.Application) -> None:
    """Add the two GET routes and the CalDAV free-busy-query override. Call before any catch-all route."""
    limits = app[SETTINGS].limits
    app[INDEX] = AvailabilityIndex(limits.max_instances, limits.request_instances, limits.request_seconds)
    app.router.add_get("/api/v1/users/{user}/availability", availability)
    app.router.add_get("/api/v1/users/{user}/busy-reasons", busy_reasons)
    app.middlewares.append(make_freebusy_middleware(INDEX, user_context, freshness_of))


# -- request context ---------------------------------------------------------------------------------------


async def user_context(app: web.Application, user: str, zone: ZoneInfo | None = None) -> UserView:
    """The user's view: their addresses and ``zone``, by default their own (else ``[availability] timezone``)."""
    addresses_of = app.get(USER_ADDRESSES, _default_addresses)
    addresses = frozenset(normalize_address(address) for address in addresses_of(user))
    return UserView(user, zone or await zone_of(app, user), addresses)


async def _request_context(request: web.Request, user: str) -> UserView:
    """:func:`user_context` with the zone of a ``?tz=Area/City`` query, if any (BadParameter if unknown)."""
    try:
        zone = await requested_zone(request, user)
    except ValueError as error:
        raise BadParameter(f"tz: {error}") from None
    return await user_context(request.app, user, zone)


def _default_addresses(user: str) -> Iterable[str]:
    return [user] if "@" in user else []


def freshness_of(app: web.Application, user: str) -> Freshness:
    provider = app.get(FRESHNESS)
    by_path = provider(user) if provider is not None else {}
    settings = app[SETTINGS]
    stale_after = timedelta(seconds=settings.availability.stale_after)
    now = datetime.now(UTC)
    # What the relay mirrors of iCloud: an answer reaching beyond it cannot know iCloud's events there.
    synced = (now - timedelta(days=settings.upstream.window_past_days),
              now + timedelta(days=settings.upstream.window_future_days))
    return Freshness(now, stale_after, by_path, provider is not None, synced)


def service(app: web.Application) -> AvailabilityService:
    return AvailabilityService(app[ENGINE], app[INDEX])


# -- parameters --------------------------------------------------------------------------------------------


class BadParameter(ValueError):
    pass


_PLUS_AS_SPACE = re.compile(r" (\d\d(:?\d\d)?)$")


def parse_instant(name: str, raw: str | None, zone: ZoneInfo) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is in the user's zone."""
    if raw is None or not raw.strip():
        raise BadParameter(f"missing {name}: give an ISO 8601 date-time such as 2026-03-02T09:00:00Z")
    # An unescaped '+' of an offset arrives as a space in a query string.
    text = _PLUS_AS_SPACE.sub(r"+\1", raw.strip())
    try:
        if "T" not in text and " " not in text and len(text) <= 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=zone).astimezone(UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(
            f"{name}={raw!r} is not an ISO 8601 date-time: use e.g. 2026-03-02T09:00:00Z"
            " or 2026-03-02T10:00+01:00"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def parse_window(request: web.Request, zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = parse_instant("start", request.query.get("start"), zone)
    end = parse_instant("end", request.query.get("end"), zone)
    if end <= start:
        raise BadParameter("end must be after start")
    max_days = request.app[SETTINGS].availability.max_window_days
    if end - start > timedelta(days=max_days):
        raise BadParameter(f"the window is longer than {max_days} days: ask for a shorter range")
    return start, end


def parse_slot(raw: str | None) -> timedelta | None:
    if raw is None:
        return None
    try:
        minutes = int(raw)
    except ValueError:
        raise BadParameter(f"slot={raw!r} is not a whole number of minutes") from None
    if not 0 < minutes <= MAX_SLOT_MINUTES:
        raise BadParameter(f"slot must be between 1 and {MAX_SLOT_MINUTES} minutes")
    return timedelta(minutes=minutes)


# -- handlers ----------------------------------------------------------------------------------------------


async def availability(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (refusal := require_access(request, user)) is not None:
        return refusal
    try:
        view = await _request_context(request, user)
        start, end = parse_window(request, view.zone)
        slot = parse_slot(request.query.get("slot"))
    except BadParameter as exc:
        return json_error(400, str(exc))
    freshness = freshness_of(request.app, user)
    compute = service(request.app).availability
    try:
        answer = await request.app[ENGINE].call(compute, view, start, end, freshness, slot)
    except BudgetExceeded as exc:
        return json_error(422, str(exc))
    stale = answer.snapshot.stale_paths
    body: dict[str, Any] = {
        "user": user,
        "start": _iso(start),
        "end": _iso(end),
        "timezone": view.zone.key,
        "busy": [_busy_json(interval, stale) for interval in answer.busy],
        "free_events": [_instance_json(instance, stale) for instance in answer.free_events],
        **_sources_json(answer.snapshot, request.app[SETTINGS].storage.default_calendar_kind),
    }
    if slot is not None and answer.slots is not None:
        body["slot_minutes"] = int(slot.total_seconds() // 60)
        body["free_slots"] = [{"start": _iso(s), "end": _iso(e)} for s, e in answer.slots]
    return web.json_response(body)


async def busy_reasons(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (refusal := require_access(request, user)) is not None:
        return refusal
    try:
        view = await _request_context(request, user)
        at = parse_instant("at", request.query.get("at"), view.zone)
    except BadParameter as exc:
        return json_error(400, str(exc))
    freshness = freshness_of(request.app, user)
    try:
        answer = await request.app[ENGINE].call(service(request.app).reasons, view, at, freshness)
    except BudgetExceeded as exc:
        return json_error(422, str(exc))
    stale = answer.snapshot.stale_paths
    return web.json_response(
        {
            "user": user,
            "at": _iso(at),
            "busy": answer.busy,
            "reasons": [
                {**_instance_json(instance, stale), "disposition": str(disposition)}
                for instance, disposition in answer.reasons
            ],
            **_sources_json(answer.snapshot, request.app[SETTINGS].storage.default_calendar_kind),
        }
    )


# -- rendering ---------------------------------------------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _instance_json(instance: Instance, stale: frozenset[str]) -> dict[str, Any]:
    return {
        "calendar": instance.calendar,
        "href": instance.href,
        "uid": instance.uid,
        "recurrence_id": None if instance.recurrence_id is None else _iso(instance.recurrence_id),
        "summary": instance.summary,
        "kind": str(instance.kind),
        "origin": str(instance.origin),
        "start": _iso(instance.start),
        "end": _iso(instance.end),
        "all_day": instance.all_day,
        "policy": instance.policy or None,
        "stale": instance.calendar in stale,
        "too_many_instances": instance.too_many_instances,
    }


def _busy_json(interval: BusyInterval, stale: frozenset[str]) -> dict[str, Any]:
    return {
        "start": _iso(interval.start),
        "end": _iso(interval.end),
        "sources": [_instance_json(instance, stale) for instance in interval.sources],
    }


def _source_json(source: SourceStatus, problems: dict[str, str], default_kind: str) -> dict[str, Any]:
    return {
        "calendar": source.path,
        "role": "booking" if source.mirror_role is None else "mirror",
        "mirror_role": source.mirror_role,
        # A booking calendar that declares no kind has the configured default; mirrors have none (null).
        "calendar_kind": source.calendar_kind or (default_kind if source.mirror_role is None else None),
        "last_success": None if source.last_success is None else _iso(source.last_success),
        "stale": source.stale,
        "error": source.error,
        "policies": source.policies,  # a mirror's availability policies (docs/relay.md, "Policies")
        "beyond_sync_window": source.beyond_sync_window,
        "unreadable_items": problems,
    }


def _sources_json(snapshot: Snapshot, default_kind: str) -> dict[str, Any]:
    """The per-source part of both answers; ``complete`` is false when a source may be missing busy time."""
    sources = [
        _source_json(source, snapshot.problems.get(source.path, {}), default_kind) for source in snapshot.sources
    ]
    stale = sorted(snapshot.stale_paths)
    beyond = any(source.beyond_sync_window for source in snapshot.sources)
    return {
        "sources": sources,
        "stale_sources": stale,
        "complete": not stale and not snapshot.problems and not beyond,
    }
