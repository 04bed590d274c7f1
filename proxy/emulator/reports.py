"""REPORT: calendar-query, calendar-multiget and sync-collection, with iCloud's quirks.

Every REPORT answer also lists the collection itself (an empty 200 propstat and the requested properties as
404), calendar data is CDATA, expanded instances carry a duplicate DTSTAMP, multiget answers unknown hrefs
with a per-item 404, an unknown sync token gets a bare 403, and free-busy-query is not supported.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from aiohttp import web
from icalendar import Calendar

from proxy.emulator import ical, resources
from proxy.emulator.resources import CALENDAR_DATA, calendar_data
from proxy.emulator.responses import RequestContext, html_error, multistatus_response
from proxy.emulator.store import CalendarObject, Collection, SyncTokenError
from proxy.emulator.xml import (
    CALDAV,
    DAV,
    NOT_FOUND,
    BadXML,
    Element,
    el,
    error_body,
    multistatus,
    parse,
    requested_properties,
    response,
    status_response,
    tag,
)

log = logging.getLogger(__name__)


class _Query:
    """What a REPORT asks for each object: properties, and how to render calendar-data."""

    def __init__(self, root: ElementTree.Element) -> None:
        self.properties = requested_properties(root) or [tag(DAV, "getetag")]
        self.expand: tuple[datetime, datetime] | None = None
        prop_element = root.find(tag(DAV, "prop"))
        data_element = prop_element.find(CALENDAR_DATA) if prop_element is not None else None
        expand_element = data_element.find(tag(CALDAV, "expand")) if data_element is not None else None
        if expand_element is not None:
            self.expand = ical.time_range(expand_element)

    def render(self, ctx: RequestContext, collection: Collection, obj: CalendarObject) -> Element:
        available = resources.object_properties(obj)
        found: list[Element] = []
        missing: list[str] = []
        for name in self.properties:
            if name == CALENDAR_DATA:
                found.append(calendar_data(self._data(obj)))
            elif name in available:
                found.append(available[name])
            else:
                missing.append(name)
        path = resources.object_path(ctx.state.account.dsid, collection.id, obj.name, resources.href_safe(ctx.emulator))
        return response(path, found, missing)

    def _data(self, obj: CalendarObject) -> str:
        if self.expand is None:
            return obj.body
        start, end = self.expand
        return ical.expand(Calendar.from_ical(obj.body), obj.component, start, end, datetime.now(UTC))

    def collection_response(self, ctx: RequestContext, collection: Collection) -> Element:
        # iCloud lists the collection itself in every REPORT answer; clients have learnt to skip it.
        path = resources.collection_path(ctx.state.account.dsid, collection.id, resources.href_safe(ctx.emulator))
        return response(path, [], self.properties)


async def report(ctx: RequestContext) -> web.StreamResponse:
    emulator, target = ctx.emulator, ctx.target
    collection = target.collection
    if target.kind != "collection" or collection is None or not collection.is_calendar:
        return html_error(emulator, 404)
    try:
        body = await ctx.request.read()
        root = parse(body)
    except BadXML as error:
        return html_error(emulator, 400, str(error))
    if root.tag == tag(CALDAV, "calendar-query"):
        return _calendar_query(ctx, collection, root)
    if root.tag == tag(CALDAV, "calendar-multiget"):
        return _multiget(ctx, collection, root)
    if root.tag == tag(DAV, "sync-collection"):
        return _sync_collection(ctx, collection, root)
    if root.tag == tag(CALDAV, "free-busy-query"):
        return html_error(emulator, 501, "free-busy-query is not supported")
    return web.Response(status=403, body=error_body(el(DAV, "supported-report")), content_type="text/xml")


def _visible_objects(collection: Collection) -> list[CalendarObject]:
    now = time.time()
    return [obj for obj in collection.objects.values() if obj.visible(now)]


def _calendar_query(ctx: RequestContext, collection: Collection, root: ElementTree.Element) -> web.Response:
    emulator = ctx.emulator
    filter_element = root.find(tag(CALDAV, "filter"))
    try:
        ical.check_filter(filter_element)
    except ical.FilterNotSupported as error:
        if emulator.options.vcalendar_filter_status == 403:
            return web.Response(
                status=403, body=error_body(el(CALDAV, "valid-filter")), content_type="text/xml"
            )
        return html_error(emulator, 400, str(error))
    if collection.access == "subscribed":
        # Subscriptions hold no objects on the CalDAV side; the feed URL (CS:source) has the events.
        return multistatus_response(multistatus([]))
    out_of_range = _date_limit_violated(ctx, root)
    if out_of_range:
        return web.Response(status=403, body=error_body(el(CALDAV, out_of_range)), content_type="text/xml")
    query = _Query(root)
    responses = [query.collection_response(ctx, collection)]
    matched = 0
    options = emulator.options
    with_data = CALENDAR_DATA in query.properties
    for obj in _visible_objects(collection):
        calendar = Calendar.from_ical(obj.body)
        if ical.matches_filter(calendar, obj.component, filter_element):
            matched += 1
            if options.query_limits and with_data and matched > options.max_query_results:
                # CCS MaxQueryWithDataResults: the whole REPORT fails, nothing is truncated.
                log.info("calendar-query refused: more than %d results with data", options.max_query_results)
                return web.Response(
                    status=403,
                    body=error_body(el(DAV, "number-of-matches-within-limits")),
                    content_type="text/xml",
                )
            responses.append(query.render(ctx, collection, obj))
    return multistatus_response(multistatus(responses))


def _date_limit_violated(ctx: RequestContext, root: ElementTree.Element) -> str | None:
    """``min-date-time`` or ``max-date-time`` when a time range reaches beyond what the server allows."""
    options = ctx.emulator.options
    if not options.query_limits:
        return None
    now = ctx.emulator.store.clock()
    earliest = datetime.fromtimestamp(now - options.min_date_days * 86400, UTC)
    latest = datetime.fromtimestamp(now + options.max_date_days * 86400, UTC)
    for element in [*root.iter(tag(CALDAV, "time-range")), *root.iter(tag(CALDAV, "expand"))]:
        start, end = element.get("start"), element.get("end")
        if start and ical.parse_utc(start) < earliest:
            return "min-date-time"
        if end and ical.parse_utc(end) > latest:
            return "max-date-time"
    return None


def _href_path(value: str) -> str:
    return unquote(urlsplit(value.strip()).path)


def _multiget(ctx: RequestContext, collection: Collection, root: ElementTree.Element) -> web.Response:
    options = ctx.emulator.options
    hrefs = root.findall(tag(DAV, "href"))
    if options.query_limits and len(hrefs) > options.max_multiget_hrefs:
        # CCS MaxMultigetWithDataHrefs; CCS itself answers 403 with number-of-matches-within-limits.
        return web.Response(
            status=403, body=error_body(el(DAV, "number-of-matches-within-limits")), content_type="text/xml"
        )
    query = _Query(root)
    visible = {obj.name: obj for obj in _visible_objects(collection)}
    prefix = unquote(
        resources.collection_path(ctx.state.account.dsid, collection.id, resources.href_safe(ctx.emulator))
    )
    responses = [query.collection_response(ctx, collection)]
    for href_element in hrefs:
        raw = (href_element.text or "").strip()
        path = _href_path(raw)
        name = path[len(prefix) :] if path.startswith(prefix) else None
        obj = visible.get(name) if name else None
        if obj is None:
            # One missing object never fails the batch: it gets its own 404 inside the 207.
            responses.append(status_response(raw, NOT_FOUND))
        else:
            responses.append(query.render(ctx, collection, obj))
    return multistatus_response(multistatus(responses))


def _visible_horizon(collection: Collection) -> int:
    """The newest revision a sync token may cover: just before the oldest change still hidden by lag."""
    now = time.time()
    hidden = [
        revision
        for revision, name in collection.history
        if name in collection.objects and not collection.objects[name].visible(now)
    ]
    return min(hidden) - 1 if hidden else collection.revision


def _sync_collection(ctx: RequestContext, collection: Collection, root: ElementTree.Element) -> web.Response:
    emulator, state = ctx.emulator, ctx.state
    token_element = root.find(tag(DAV, "sync-token"))
    token = (token_element.text or "").strip() if token_element is not None else ""
    query = _Query(root)
    horizon = _visible_horizon(collection)
    responses = [query.collection_response(ctx, collection)]
    if not token:
        for obj in _visible_objects(collection):
            responses.append(query.render(ctx, collection, obj))
    else:
        try:
            since = emulator.store.parse_sync_token(collection, token, emulator.options.sync_token_lifetime_days)
        except SyncTokenError as error:
            log.info("sync-collection refused: %s", error)
            if emulator.options.sync_token_error_element:
                return web.Response(
                    status=403, body=error_body(el(DAV, "valid-sync-token")), content_type="text/xml"
                )
            return web.Response(status=403, body=b"")
        changed = dict.fromkeys(name for revision, name in collection.history if since < revision <= horizon)
        for name in changed:
            obj = collection.objects.get(name)
            if obj is None:
                path = resources.object_path(state.account.dsid, collection.id, name, resources.href_safe(ctx.emulator))
                responses.append(status_response(path, NOT_FOUND))
            else:
                responses.append(query.render(ctx, collection, obj))
    sync_token = el(DAV, "sync-token", text=emulator.store.sync_token(state, collection, max(horizon, 0)))
    return multistatus_response(multistatus(responses, sync_token))
