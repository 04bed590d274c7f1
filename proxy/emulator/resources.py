"""Where a request path points, and the WebDAV properties each kind of resource has on iCloud."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from proxy.emulator.context import Emulator
from proxy.emulator.store import AccountState, CalendarObject, Collection
from proxy.emulator.xml import APPLE_ICAL, CALDAV, CALSERVER, DAV, Element, el, href, prop, tag

OWNER_PRIVILEGES = (
    (DAV, "read"),
    (CALDAV, "read-free-busy"),
    (DAV, "read-current-user-privilege-set"),
    (DAV, "write"),
    (DAV, "write-properties"),
    (DAV, "write-content"),
    (DAV, "bind"),
    (DAV, "unbind"),
)
READ_ONLY_PRIVILEGES = OWNER_PRIVILEGES[:3]
INBOX_PRIVILEGES = (*OWNER_PRIVILEGES, (CALDAV, "schedule-deliver"))
OUTBOX_PRIVILEGES = (*READ_ONLY_PRIVILEGES, (CALDAV, "schedule-send"))
NOTIFICATION_PRIVILEGES = ((DAV, "read"), (DAV, "read-current-user-privilege-set"), (DAV, "unbind"))

SUPPORTED_REPORTS = ((CALDAV, "calendar-query"), (CALDAV, "calendar-multiget"), (DAV, "sync-collection"))

CALENDAR_DATA = tag(CALDAV, "calendar-data")
CALENDAR_TIMEZONE_UTC = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Apple Inc.//iCloud Calendar Emulator//EN\r\n"
    "BEGIN:VTIMEZONE\r\nTZID:UTC\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\nTZOFFSETFROM:+0000\r\n"
    "TZOFFSETTO:+0000\r\nTZNAME:UTC\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\nEND:VCALENDAR\r\n"
)


@dataclass
class Target:
    """A resolved path. ``kind`` is root, well-known, principal, home, collection or object; for the last two
    ``collection``/``obj`` are None when the resource does not exist (yet)."""

    kind: str
    path: str
    dsid: str | None = None
    collection_id: str | None = None
    name: str | None = None
    state: AccountState | None = None
    collection: Collection | None = None
    obj: CalendarObject | None = None


class NotFound(Exception):
    pass


def home_path(dsid: str) -> str:
    return f"/{dsid}/calendars/"


def href_safe(emulator: Emulator) -> str:
    """Characters left unencoded in hrefs: iCloud spells ``@`` as ``%40`` (option ``encode_at_in_hrefs``)."""
    return "" if emulator.options.encode_at_in_hrefs else "@"


def collection_path(dsid: str, collection_id: str, safe: str = "") -> str:
    return f"/{dsid}/calendars/{quote(collection_id, safe=safe)}/"


def object_path(dsid: str, collection_id: str, name: str, safe: str = "") -> str:
    return collection_path(dsid, collection_id, safe) + quote(name, safe=safe)


def resolve(emulator: Emulator, path: str) -> Target:
    """Map a path onto the model; raises NotFound for paths that name nothing iCloud serves."""
    if path == "/":
        return Target("root", path)
    if path.rstrip("/") == "/.well-known/caldav":
        return Target("well-known", path)
    parts = [unquote(part) for part in path.strip("/").split("/")]
    if len(parts) < 2 or not parts[0].isdigit():
        raise NotFound(path)
    dsid = parts[0]
    state = emulator.store.by_dsid(dsid)
    if parts[1] == "principal" and len(parts) == 2:
        return Target("principal", path, dsid, state=state)
    if parts[1] != "calendars" or len(parts) > 4:
        raise NotFound(path)
    if len(parts) == 2:
        return Target("home", path, dsid, state=state)
    collection = state.collections.get(parts[2]) if state else None
    if len(parts) == 3:
        return Target("collection", path, dsid, parts[2], state=state, collection=collection)
    obj = collection.objects.get(parts[3]) if collection else None
    return Target("object", path, dsid, parts[2], parts[3], state, collection, obj)


def _privileges(pairs: tuple[tuple[str, str], ...]) -> Element:
    return prop(
        DAV, "current-user-privilege-set", *(el(DAV, "privilege", el(ns, name)) for ns, name in pairs)
    )


def _components(names: tuple[str, ...]) -> Element:
    return prop(CALDAV, "supported-calendar-component-set", *(el(CALDAV, "comp", name=n) for n in names))


def _resourcetype(*types: tuple[str, str]) -> Element:
    return prop(DAV, "resourcetype", *(el(ns, name) for ns, name in types))


def _principal_href(state: AccountState) -> str:
    return f"/{state.account.dsid}/principal/"


def principal_properties(emulator: Emulator, state: AccountState) -> dict[str, Element]:
    account = state.account
    principal = _principal_href(state)
    addresses = [href(principal), href(f"urn:uuid:{account.dsid}")]
    for index, address in enumerate(account.addresses):
        # Clients pick the address marked preferred, not the first one in wire order.
        attributes = {"preferred": "1"} if index == 0 else {}
        addresses.append(href(f"mailto:{address}", **attributes))
    properties = [
        _resourcetype((DAV, "principal")),
        prop(DAV, "displayname", text=account.full_name),
        prop(CALDAV, "calendar-home-set", href(emulator.partition_url.rstrip("/") + home_path(account.dsid))),
        prop(CALDAV, "calendar-user-address-set", *addresses),
        prop(DAV, "current-user-principal", href(principal)),
        prop(DAV, "principal-URL", href(principal)),
        prop(CALDAV, "schedule-inbox-URL", href(home_path(account.dsid) + "inbox/")),
        prop(CALDAV, "schedule-outbox-URL", href(home_path(account.dsid) + "outbox/")),
        prop(
            CALSERVER,
            "email-address-set",
            *(el(CALSERVER, "email-address", text=a) for a in account.addresses),
        ),
    ]
    return {element.tag: element for element in properties}


def root_properties(state: AccountState) -> dict[str, Element]:
    properties = [
        _resourcetype((DAV, "collection")),
        prop(DAV, "current-user-principal", href(_principal_href(state))),
    ]
    return {element.tag: element for element in properties}


def home_properties(emulator: Emulator, state: AccountState) -> dict[str, Element]:
    store = emulator.store
    properties = [
        prop(DAV, "displayname", text=state.account.full_name),
        _resourcetype((DAV, "collection")),
        _components(("VEVENT", "VTODO", "VFREEBUSY")),
        prop(CALSERVER, "getctag", text=store.ctag(state, None)),
        prop(DAV, "sync-token", text=store.sync_token(state, None)),
        _privileges(OWNER_PRIVILEGES),
        prop(DAV, "owner", href(_principal_href(state))),
        prop(DAV, "current-user-principal", href(_principal_href(state))),
    ]
    return {element.tag: element for element in properties}


def collection_properties(
    emulator: Emulator, state: AccountState, collection: Collection
) -> dict[str, Element]:
    store = emulator.store
    principal = _principal_href(state)
    common = [prop(DAV, "owner", href(principal)), prop(DAV, "current-user-principal", href(principal))]
    if collection.kind == "inbox":
        properties = [
            _resourcetype((DAV, "collection"), (CALDAV, "schedule-inbox")),
            _components(collection.components),
            prop(CALSERVER, "getctag", text=store.ctag(state, collection)),
            _privileges(INBOX_PRIVILEGES),
        ]
    elif collection.kind == "outbox":
        properties = [
            _resourcetype((DAV, "collection"), (CALDAV, "schedule-outbox")),
            _components(collection.components),
            _privileges(OUTBOX_PRIVILEGES),
        ]
    elif collection.kind == "notification":
        properties = [
            _resourcetype((DAV, "collection"), (CALSERVER, "notification")),
            prop(CALSERVER, "getctag", text=store.ctag(state, collection)),
            _privileges(NOTIFICATION_PRIVILEGES),
        ]
    else:
        types = [(DAV, "collection"), (CALDAV, "calendar")]
        if collection.access == "shared-owner":
            types.append((CALSERVER, "shared-owner"))
        elif collection.access in ("read-only", "read-write"):
            types.append((CALSERVER, "shared"))
        elif collection.access == "subscribed":
            types = [(DAV, "collection"), (CALSERVER, "subscribed")]
        privileges = OWNER_PRIVILEGES if collection.writable else READ_ONLY_PRIVILEGES
        properties = [
            prop(DAV, "displayname", text=collection.displayname or collection.id),
            _resourcetype(*types),
            _components(collection.components),
            prop(CALSERVER, "getctag", text=store.ctag(state, collection)),
            prop(DAV, "sync-token", text=store.sync_token(state, collection)),
            prop(APPLE_ICAL, "calendar-color", text=collection.color or "#1BADF8FF"),
            prop(APPLE_ICAL, "calendar-order", text=str(collection.order)),
            _privileges(privileges),
            prop(
                DAV,
                "supported-report-set",
                *(
                    el(DAV, "supported-report", el(DAV, "report", el(ns, name)))
                    for ns, name in SUPPORTED_REPORTS
                ),
            ),
            prop(CALDAV, "calendar-timezone", text=CALENDAR_TIMEZONE_UTC),
        ]
        if collection.source:
            properties.append(prop(CALSERVER, "source", href(collection.source)))
    merged = {element.tag: element for element in properties}
    for element in common:
        merged[element.tag] = element
    return merged


def object_properties(obj: CalendarObject) -> dict[str, Element]:
    properties = [
        prop(DAV, "getetag", text=f'"{obj.etag}"'),
        prop(DAV, "getcontenttype", text="text/calendar; charset=utf-8"),
        prop(DAV, "getcontentlength", text=str(len(obj.body.encode()))),
        prop(DAV, "resourcetype"),
    ]
    return {element.tag: element for element in properties}


def calendar_data(body: str) -> Element:
    element = prop(CALDAV, "calendar-data")
    element.cdata = body
    return element
