"""The CalDAV methods other than REPORT: PROPFIND, PROPPATCH, MKCALENDAR, MKCOL, OPTIONS, GET, PUT, DELETE."""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ElementTree

from aiohttp import web
from icalendar import Calendar

from proxy.emulator import ccs, resources
from proxy.emulator.ical import ObjectRejected, parse_object
from proxy.emulator.mail import scheduled_recipients
from proxy.emulator.resources import CALENDAR_DATA, calendar_data
from proxy.emulator.responses import RequestContext, etag_matches, html_error, multistatus_response
from proxy.emulator.xml import (
    APPLE_ICAL,
    CALDAV,
    DAV,
    BadXML,
    Element,
    empty,
    multistatus,
    parse,
    propstat,
    requested_properties,
    response,
    tag,
)

log = logging.getLogger(__name__)

DAV_CAPABILITIES = (
    "1, 2, 3, access-control, calendar-access, calendar-schedule, calendar-auto-schedule, "
    "calendar-availability, calendarserver-sharing, calendarserver-subscribed, "
    "calendarserver-principal-property-search"
)
ALLOWED_METHODS = "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, REPORT, MKCALENDAR"
COMPONENT_LIMIT_MESSAGE = (
    "Calendar SupportedCalendarComponentSet length exceeded, only one calendar component type supported"
)
#: properties a client may change with PROPPATCH (or set in MKCALENDAR), and the collection field behind each
SETTABLE = {
    tag(DAV, "displayname"): "displayname",
    tag(APPLE_ICAL, "calendar-color"): "color",
    tag(APPLE_ICAL, "calendar-order"): "order",
}


async def _read_xml(request: web.Request) -> ElementTree.Element | None:
    body = await request.read()
    return parse(body) if body.strip() else None


def _properties_of(ctx: RequestContext, path: str) -> dict[str, Element]:
    """The properties of a resource in the caller's account, by its path."""
    emulator, state = ctx.emulator, ctx.state
    target = resources.resolve(emulator, path)
    if target.kind == "root":
        return resources.root_properties(state)
    if target.kind in ("principal", "well-known"):
        return resources.principal_properties(emulator, state)
    if target.kind == "home":
        return resources.home_properties(emulator, state)
    if target.kind == "collection" and target.collection:
        return resources.collection_properties(emulator, state, target.collection)
    assert target.obj is not None
    return resources.object_properties(target.obj)


def _propfind_response(
    ctx: RequestContext, path: str, requested: list[str] | None, body: str | None = None
) -> Element:
    available = _properties_of(ctx, path)
    if requested is None:
        return response(path, list(available.values()), [])
    found: list[Element] = []
    missing: list[str] = []
    for name in requested:
        if name in available:
            found.append(available[name])
        elif name == CALENDAR_DATA and body is not None:
            found.append(calendar_data(body))
        else:
            missing.append(name)
    return response(path, found, missing)


def _members(ctx: RequestContext) -> list[str]:
    """Paths listed by a Depth-1 PROPFIND of the target (besides the target itself)."""
    state, target = ctx.state, ctx.target
    dsid = state.account.dsid
    if target.kind == "home":
        return [resources.collection_path(dsid, cid, resources.href_safe(ctx.emulator)) for cid in state.collections]
    if target.kind == "collection" and target.collection:
        now = time.time()
        return [
            resources.object_path(dsid, target.collection.id, obj.name, resources.href_safe(ctx.emulator))
            for obj in target.collection.objects.values()
            if obj.visible(now)
        ]
    return []


async def propfind(ctx: RequestContext) -> web.StreamResponse:
    target, emulator = ctx.target, ctx.emulator
    try:
        requested = requested_properties(await _read_xml(ctx.request))
    except BadXML as error:
        return html_error(emulator, 400, str(error))
    missing_collection = target.kind in ("collection", "object") and target.collection is None
    if missing_collection or (target.kind == "object" and target.obj is None):
        return html_error(emulator, 404)
    depth = ctx.request.headers.get("Depth", "1")
    if target.kind == "well-known":
        # Seen on iCloud: /.well-known/caldav answers like the principal, with the principal's href.
        paths = [f"/{ctx.state.account.dsid}/principal/"]
    else:
        paths = [_canonical(ctx)]
        if depth != "0":
            paths += _members(ctx)
    responses = []
    for path in paths:
        member = resources.resolve(emulator, path)
        responses.append(_propfind_response(ctx, path, requested, member.obj.body if member.obj else None))
    return multistatus_response(multistatus(responses))


def _canonical(ctx: RequestContext) -> str:
    target, dsid = ctx.target, ctx.state.account.dsid
    if target.kind == "principal":
        return f"/{dsid}/principal/"
    if target.kind == "home":
        return resources.home_path(dsid)
    if target.kind == "collection" and target.collection_id:
        return resources.collection_path(dsid, target.collection_id, resources.href_safe(ctx.emulator))
    if target.kind == "object" and target.collection_id and target.name:
        return resources.object_path(dsid, target.collection_id, target.name, resources.href_safe(ctx.emulator))
    return target.path


def _settable_values(element: ElementTree.Element) -> dict[str, object]:
    values: dict[str, object] = {}
    for child in element:
        field_name = SETTABLE[child.tag]
        text = (child.text or "").strip()
        values[field_name] = int(text or 0) if field_name == "order" else text
    return values


async def proppatch(ctx: RequestContext) -> web.StreamResponse:
    target, emulator = ctx.target, ctx.emulator
    if target.kind != "collection" or target.collection is None:
        return html_error(emulator, 404 if target.kind == "collection" else 403)
    try:
        root = await _read_xml(ctx.request)
    except BadXML as error:
        return html_error(emulator, 400, str(error))
    if root is None or root.tag != tag(DAV, "propertyupdate"):
        return html_error(emulator, 400, "expected a propertyupdate body")
    names = [child.tag for op in root for prop_element in op for child in prop_element]
    refused = [name for name in names if name not in SETTABLE or not target.collection.is_calendar]
    path = _canonical(ctx)
    if refused:
        # PROPPATCH is atomic: one refused property fails the others with 424.
        node = response(path, [], [], refused)
        accepted = [name for name in names if name not in refused]
        if accepted:
            node.children.append(propstat([empty(n) for n in accepted], "HTTP/1.1 424 Failed Dependency"))
        node.children = [child for child in node.children if _has_props(child)]
        return multistatus_response(multistatus([node]))
    values: dict[str, object] = {}
    for operation in root:
        for prop_element in operation:
            if operation.tag == tag(DAV, "set"):
                values.update(_settable_values(prop_element))
            else:
                values.update({SETTABLE[child.tag]: None for child in prop_element})
    emulator.store.update_calendar(ctx.state, target.collection, **values)
    return multistatus_response(multistatus([response(path, [empty(name) for name in names], [])]))


def _has_props(propstat_element: Element) -> bool:
    return bool(propstat_element.children and propstat_element.children[0].children)


async def mkcalendar(ctx: RequestContext) -> web.StreamResponse:
    target, emulator = ctx.target, ctx.emulator
    if target.kind != "collection" or not target.collection_id:
        return html_error(emulator, 403)
    if target.collection is not None:
        return html_error(emulator, 405, "the calendar already exists")
    try:
        root = await _read_xml(ctx.request)
    except BadXML as error:
        return html_error(emulator, 400, str(error))
    components = ["VEVENT"]
    values: dict[str, object] = {}
    if root is not None:
        for prop_element in root.iter(tag(DAV, "prop")):
            component_set = prop_element.find(tag(CALDAV, "supported-calendar-component-set"))
            if component_set is not None:
                components = [comp.get("name", "").upper() for comp in component_set]
            values.update(_settable_values(_only_settable(prop_element)))
    if len(components) > 1:
        return html_error(emulator, 400, COMPONENT_LIMIT_MESSAGE)
    if components[0] not in ("VEVENT", "VTODO"):
        return html_error(emulator, 403, f"{components[0]} calendars are not supported")
    collection = emulator.store.create_calendar(
        ctx.state,
        target.collection_id,
        str(values.get("displayname") or target.collection_id),
        components[0],
        str(values.get("color") or "#1BADF8FF"),
    )
    log.info("calendar %s created in %s", collection.id, ctx.state.account.apple_id)
    return web.Response(status=201, headers={"Cache-Control": "no-cache"})


def _only_settable(prop_element: ElementTree.Element) -> ElementTree.Element:
    kept = ElementTree.Element(prop_element.tag)
    kept.extend(child for child in prop_element if child.tag in SETTABLE)
    return kept


async def mkcol(ctx: RequestContext) -> web.StreamResponse:
    # iCloud creates calendars only through MKCALENDAR; extended MKCOL is refused.
    return html_error(ctx.emulator, 403, "MKCOL is not supported; use MKCALENDAR")


async def options(ctx: RequestContext) -> web.StreamResponse:
    return web.Response(status=200, headers={"DAV": DAV_CAPABILITIES, "Allow": ALLOWED_METHODS})


async def get(ctx: RequestContext) -> web.StreamResponse:
    target = ctx.target
    if target.kind != "object":
        return html_error(ctx.emulator, 405)
    if target.obj is None:
        return html_error(ctx.emulator, 404)
    return web.Response(
        body=target.obj.body.encode(),
        headers={"ETag": f'"{target.obj.etag}"', "Content-Type": "text/calendar; charset=utf-8"},
    )


def _writable_collection_error(ctx: RequestContext) -> web.Response | None:
    collection = ctx.target.collection
    if collection is None:
        return html_error(ctx.emulator, 404 if ctx.target.kind == "object" else 409)
    if not collection.writable:
        return html_error(ctx.emulator, 403, "the calendar is read-only")
    return None


async def put(ctx: RequestContext) -> web.StreamResponse:
    request, emulator, target, state = ctx.request, ctx.emulator, ctx.target, ctx.state
    if target.kind != "object" or not target.name:
        return html_error(emulator, 405)
    refusal = _writable_collection_error(ctx)
    if refusal:
        return refusal
    collection = target.collection
    assert collection is not None
    if request.content_type != "text/calendar":
        return html_error(emulator, 415, f"unsupported content type {request.content_type}")
    try:
        body = (await request.read()).decode("utf-8")
        parsed = parse_object(body)
    except UnicodeDecodeError:
        return html_error(emulator, 400, "the body is not UTF-8")
    except ObjectRejected as rejection:
        return html_error(emulator, rejection.status, rejection.reason)
    if parsed.component not in collection.components:
        return html_error(emulator, 403, f"{collection.id} does not hold {parsed.component} components")
    existing = target.obj
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and existing and etag_matches(if_none_match, existing.etag):
        return html_error(emulator, 412)
    if_match = request.headers.get("If-Match")
    if if_match and (existing is None or not etag_matches(if_match, existing.etag)):
        return html_error(emulator, 412)
    holder = state.uid_index.get(parsed.uid)
    if holder and holder != (collection.id, target.name):
        # UIDs are unique across the whole account, not just per calendar.
        return html_error(emulator, 412, "an object with this UID already exists")
    stored = _as_icloud_stores(ctx, parsed.calendar, existing is None)
    lag = emulator.faults.settings.visibility_lag_ms / 1000
    obj, created = emulator.store.put_object(
        state, collection, target.name, stored or body, parsed.uid, parsed.component, time.time() + lag
    )
    _send_scheduling_mail(ctx, "REQUEST", parsed.calendar, parsed.uid, parsed.summary)
    # Live iCloud sends the ETag even when it stored something else than it was sent (a default alarm, fewer
    # VTIMEZONEs): a client learns of the difference only by reading the object back.
    return web.Response(status=201 if created else 204, headers={"ETag": f'"{obj.etag}"'})


def _as_icloud_stores(ctx: RequestContext, calendar: Calendar, created: bool) -> str | None:
    """Apply CCS's PUT-time changes to ``calendar`` in place; the new body if anything changed."""
    options, collection = ctx.emulator.options, ctx.target.collection
    assert collection is not None
    changed = False
    if options.timezones_by_reference:
        changed |= ccs.strip_standard_timezones(calendar)
    if options.default_alarms and created and collection.access == "owner":
        changed |= ccs.add_default_alarms(calendar)
    if options.implicit_scheduling:
        changed |= ccs.enforce_server_scheduling(calendar, _hosted_addresses(ctx))
    return calendar.to_ical().decode() if changed else None


def _hosted_addresses(ctx: RequestContext) -> list[str]:
    return [address for state in ctx.emulator.store.accounts.values() for address in state.account.addresses]


def _send_scheduling_mail(ctx: RequestContext, method: str, calendar: Calendar, uid: str, summary: str) -> None:
    account = ctx.state.account
    recipients = scheduled_recipients(calendar, account.addresses)
    if recipients:
        entry = ctx.emulator.mail.record(method, account.apple_id, recipients, uid, summary, _canonical(ctx))
        log.info("would e-mail %s %s to %s", method, uid, ", ".join(entry.recipients))


async def delete(ctx: RequestContext) -> web.StreamResponse:
    emulator, target, state = ctx.emulator, ctx.target, ctx.state
    if target.kind == "collection":
        if target.collection is None:
            return html_error(emulator, 404)
        if not target.collection.deletable:
            return html_error(emulator, 403)
        emulator.store.delete_calendar(state, target.collection)
        return web.Response(status=204)
    if target.kind != "object":
        return html_error(emulator, 403)
    if target.obj is None:
        return html_error(emulator, 404)
    refusal = _writable_collection_error(ctx)
    if refusal:
        return refusal
    if_match = ctx.request.headers.get("If-Match")
    if if_match and not etag_matches(if_match, target.obj.etag):
        return html_error(emulator, 412)
    assert target.collection is not None
    removed = emulator.store.delete_object(state, target.collection, target.obj.name)
    try:
        parsed = parse_object(removed.body)
    except ObjectRejected:
        return web.Response(status=204)
    organizer = ccs.organizer_to_reply(parsed.calendar, state.account.addresses)
    if organizer and emulator.options.implicit_scheduling:
        # The account is only an attendee: deleting is declining, and the organizer hears about it.
        entry = emulator.mail.record(
            "REPLY", state.account.apple_id, [organizer], parsed.uid, parsed.summary, _canonical(ctx)
        )
        log.info("would e-mail REPLY (declined) %s to %s", parsed.uid, ", ".join(entry.recipients))
        return web.Response(status=204)
    _send_scheduling_mail(ctx, "CANCEL", parsed.calendar, parsed.uid, parsed.summary)
    return web.Response(status=204)
