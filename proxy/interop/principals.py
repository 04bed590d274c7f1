"""RFC 3744 principal search: ``principal-property-search`` and ``principal-search-property-set``.

Radicale answers both with an empty multistatus. calrelay's principals are the users of the users file,
each at ``/<name>/``: a client finds them by display name (the principal's ``DAV:displayname``, or the user
name when it has none) or by e-mail (``C:calendar-user-address-set``, ``CS:email-address-set``: the user name
when it is an address, and the Apple ID of the user's iCloud link). Matching is a caseless substring match,
as §9.4 says. A person only ever finds themself; a service account (the CRM) finds every user.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web
from radicale import pathutils
from radicale.storage import BaseCollection

from proxy.auth import PRINCIPAL_REQUEST_KEY, Principal
from proxy.availability.routes import USER_ADDRESSES
from proxy.engine import Engine
from proxy.interop.davxml import CALDAV, CALENDARSERVER, DAV, error_response, xml_response
from proxy.keys import AUTHENTICATOR, ENGINE

DISPLAYNAME = DAV + "displayname"
ADDRESS_SET = CALDAV + "calendar-user-address-set"
EMAIL_SET = CALENDARSERVER + "email-address-set"

#: The properties a client may search on, with the description principal-search-property-set gives.
SEARCHABLE = {
    DISPLAYNAME: "Display name",
    ADDRESS_SET: "Calendar user address (mailto:)",
    EMAIL_SET: "E-mail address",
}
#: What a result carries when the request names no properties.
DEFAULT_PROPS = (DISPLAYNAME, CALDAV + "calendar-home-set", DAV + "principal-URL")


@dataclass(frozen=True)
class PrincipalRecord:
    name: str
    displayname: str
    emails: tuple[str, ...]

    @property
    def href(self) -> str:
        return f"/{self.name}/"

    def values(self, prop: str) -> tuple[str, ...]:
        """The texts ``prop`` is matched against (nothing for a property that is not searchable)."""
        if prop == DISPLAYNAME:
            return (self.displayname,)
        if prop == ADDRESS_SET:
            return (*(f"mailto:{email}" for email in self.emails), self.href)
        if prop == EMAIL_SET:
            return self.emails
        return ()


@dataclass(frozen=True)
class PropertySearch:
    props: tuple[str, ...]
    match: str

    def matches(self, record: PrincipalRecord) -> bool:
        needle = self.match.casefold()
        return any(needle in value.casefold() for prop in self.props for value in record.values(prop))


@dataclass(frozen=True)
class SearchQuery:
    searches: tuple[PropertySearch, ...]
    anyof: bool
    props: tuple[str, ...]  # the properties each result carries

    def matches(self, record: PrincipalRecord) -> bool:
        if not self.searches:  # no property-search at all: every visible principal
            return True
        results = (search.matches(record) for search in self.searches)
        return any(results) if self.anyof else all(results)


def parse_query(root: ET.Element) -> SearchQuery:
    """The search in a principal-property-search body. Raises ValueError for an unusable one."""
    searches = []
    for element in root.findall(DAV + "property-search"):
        prop = element.find(DAV + "prop")
        match = element.find(DAV + "match")
        if prop is None or match is None or len(prop) == 0:
            raise ValueError("each DAV:property-search needs a DAV:prop with a property and a DAV:match")
        searches.append(PropertySearch(tuple(child.tag for child in prop), (match.text or "").strip()))
    # Some clients (python-caldav among them) put the wanted properties beside an empty DAV:prop instead
    # of inside it: take both.
    wanted: list[str] = []
    prop = root.find(DAV + "prop")
    if prop is not None:
        wanted.extend(child.tag for child in prop)
    skipped = {DAV + "property-search", DAV + "prop", DAV + "apply-to-principal-collection-set"}
    wanted.extend(child.tag for child in root if child.tag not in skipped)
    return SearchQuery(tuple(searches), root.get("test", "allof") == "anyof", tuple(dict.fromkeys(wanted)))


def visible_names(caller: Principal, users: Iterable[str]) -> list[str]:
    """The principals ``caller`` may find: everyone for a service account, only themself for a person."""
    return sorted(users) if caller.is_service else [caller.name]


def render(records: Sequence[PrincipalRecord], props: Sequence[str]) -> ET.Element:
    multistatus = ET.Element(DAV + "multistatus")
    for record in records:
        response = ET.SubElement(multistatus, DAV + "response")
        ET.SubElement(response, DAV + "href").text = record.href
        found, missing = ET.Element(DAV + "prop"), ET.Element(DAV + "prop")
        for tag in props or DEFAULT_PROPS:
            value = _property(record, tag)
            if value is None:
                ET.SubElement(missing, tag)
            else:
                found.append(value)
        for prop, status in ((found, "HTTP/1.1 200 OK"), (missing, "HTTP/1.1 404 Not Found")):
            if len(prop):
                propstat = ET.SubElement(response, DAV + "propstat")
                propstat.append(prop)
                ET.SubElement(propstat, DAV + "status").text = status
    return multistatus


def _hrefs(tag: str, hrefs: Iterable[str]) -> ET.Element:
    element = ET.Element(tag)
    for href in hrefs:
        ET.SubElement(element, DAV + "href").text = href
    return element


def _property(record: PrincipalRecord, tag: str) -> ET.Element | None:
    if tag == DISPLAYNAME:
        element = ET.Element(tag)
        element.text = record.displayname
        return element
    if tag in (CALDAV + "calendar-home-set", DAV + "principal-URL"):
        return _hrefs(tag, [record.href])
    if tag == ADDRESS_SET:
        return _hrefs(tag, record.values(ADDRESS_SET))
    if tag == EMAIL_SET:
        return _hrefs(tag, record.emails)
    if tag == DAV + "resourcetype":
        element = ET.Element(tag)
        ET.SubElement(element, DAV + "principal")
        ET.SubElement(element, DAV + "collection")
        return element
    return None


def displaynames(engine: Engine, names: Sequence[str]) -> dict[str, str]:
    """Each principal's stored DAV:displayname, or its name. Blocking: run it in the engine's pool."""
    result = {}
    for name in names:
        displayname = None
        if pathutils.is_safe_path_component(name):
            with engine.storage.acquire_lock("r", name):
                collection = next(iter(engine.storage.discover(f"/{name}/")), None)
                if isinstance(collection, BaseCollection):
                    displayname = collection.get_meta("D:displayname")
        result[name] = displayname or name
    return result


def _emails(app: web.Application, name: str) -> tuple[str, ...]:
    addresses_of = app.get(USER_ADDRESSES)
    addresses = list(addresses_of(name)) if addresses_of is not None else ([name] if "@" in name else [])
    if "@" in name:
        addresses.insert(0, name)
    emails = (address.removeprefix("mailto:").removeprefix("MAILTO:") for address in addresses)
    return tuple(dict.fromkeys(email for email in emails if "@" in email))


async def principal_property_search(
    request: web.Request, root: ET.Element, forward: Callable[[bytes], Awaitable[web.Response]]
) -> web.StreamResponse:
    try:
        query = parse_query(root)
    except ValueError as error:
        return error_response(400, DAV + "valid-search", str(error))
    caller = request[PRINCIPAL_REQUEST_KEY]
    users = await request.app[ENGINE].call(request.app[AUTHENTICATOR].users.records)
    names = visible_names(caller, users)
    shown = await request.app[ENGINE].call(displaynames, request.app[ENGINE], names)
    records = [PrincipalRecord(name, shown[name], _emails(request.app, name)) for name in names]
    return xml_response(render([r for r in records if query.matches(r)], query.props))


async def principal_search_property_set(
    request: web.Request, root: ET.Element, forward: Callable[[bytes], Awaitable[web.Response]]
) -> web.StreamResponse:
    answer = ET.Element(DAV + "principal-search-property-set")
    for tag, description in SEARCHABLE.items():
        searchable = ET.SubElement(answer, DAV + "principal-search-property")
        ET.SubElement(ET.SubElement(searchable, DAV + "prop"), tag)
        text = ET.SubElement(searchable, DAV + "description")
        text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        text.text = description
    return xml_response(answer, 200)
