"""Request bodies and multistatus parsing.

Bodies start exactly with ``<?xml`` (iCloud answers 400 to whitespace before the prolog). Responses are parsed
with defusedxml whatever their Content-Type says (iCloud's is unreliable); ``calendar-data`` may be CDATA, which
the parser hands over as plain text. Hrefs are kept exactly as sent (percent-encoded): python-caldav's own
parsers decode them, and the relay keys its state on the wire form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CALSERVER = "http://calendarserver.org/ns/"
APPLE_ICAL = "http://apple.com/ns/ical/"

_PROLOG = '<?xml version="1.0" encoding="utf-8"?>'
_NAMESPACES = f'xmlns:D="{DAV}" xmlns:C="{CALDAV}" xmlns:CS="{CALSERVER}" xmlns:A="{APPLE_ICAL}"'


def q(namespace: str, name: str) -> str:
    """Clark notation, as ElementTree names tags."""
    return f"{{{namespace}}}{name}"


HREF = q(DAV, "href")
STATUS = q(DAV, "status")
RESPONSE = q(DAV, "response")
PROPSTAT = q(DAV, "propstat")
PROP = q(DAV, "prop")
SYNC_TOKEN = q(DAV, "sync-token")
GETETAG = q(DAV, "getetag")
RESOURCETYPE = q(DAV, "resourcetype")
DISPLAYNAME = q(DAV, "displayname")
PRIVILEGES = q(DAV, "current-user-privilege-set")
OWNER = q(DAV, "owner")
CURRENT_USER_PRINCIPAL = q(DAV, "current-user-principal")
CALENDAR_HOME_SET = q(CALDAV, "calendar-home-set")
CALENDAR_DATA = q(CALDAV, "calendar-data")
COMPONENTS = q(CALDAV, "supported-calendar-component-set")
GETCTAG = q(CALSERVER, "getctag")
SOURCE = q(CALSERVER, "source")
COLOR = q(APPLE_ICAL, "calendar-color")

COLLECTION = q(DAV, "collection")
CALENDAR = q(CALDAV, "calendar")
SHARED = q(CALSERVER, "shared")
SUBSCRIBED = q(CALSERVER, "subscribed")


class MalformedResponse(ValueError):
    """The body is not a readable multistatus."""


def _propfind(*props: str) -> str:
    return f"{_PROLOG}<D:propfind {_NAMESPACES}><D:prop>{''.join(props)}</D:prop></D:propfind>"


PRINCIPAL_BODY = _propfind("<D:current-user-principal/>")
HOME_SET_BODY = _propfind("<C:calendar-home-set/>")
HOME_LISTING_BODY = _propfind(
    "<D:resourcetype/>",
    "<D:displayname/>",
    "<A:calendar-color/>",
    "<C:supported-calendar-component-set/>",
    "<D:current-user-privilege-set/>",
    "<D:owner/>",
    "<CS:getctag/>",
    "<D:sync-token/>",
    "<CS:source/>",
)
STATE_BODY = _propfind("<CS:getctag/>", "<D:sync-token/>")
ETAG_BODY = _propfind("<D:getetag/>", "<D:resourcetype/>")


def sync_collection_body(token: str | None) -> str:
    token_element = f"<D:sync-token>{escape(token)}</D:sync-token>" if token else "<D:sync-token/>"
    return (
        f"{_PROLOG}<D:sync-collection {_NAMESPACES}>{token_element}<D:sync-level>1</D:sync-level>"
        "<D:prop><D:getetag/></D:prop></D:sync-collection>"
    )


def multiget_body(hrefs: list[str]) -> str:
    listed = "".join(f"<D:href>{escape(href)}</D:href>" for href in hrefs)
    return (
        f"{_PROLOG}<C:calendar-multiget {_NAMESPACES}><D:prop><D:getetag/><C:calendar-data/></D:prop>"
        f"{listed}</C:calendar-multiget>"
    )


@dataclass
class Entry:
    """One ``<response>``: its href as sent, its own status (sync deletions, multiget misses) and the
    properties from its 2xx propstats (properties in 404 propstats are simply absent)."""

    href: str
    status: int | None
    props: dict[str, Element] = field(default_factory=dict)


@dataclass
class Multistatus:
    entries: list[Entry]
    sync_token: str | None


def status_code(text: str | None) -> int | None:
    """``"HTTP/1.1 404 Not Found"`` -> 404; empty or odd status lines (seen on iCloud) -> None."""
    parts = (text or "").split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


def parse_multistatus(body: bytes) -> Multistatus:
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, DefusedXmlException) as error:
        raise MalformedResponse(f"unreadable XML: {error}") from error
    if root.tag != q(DAV, "multistatus"):
        raise MalformedResponse(f"expected a DAV:multistatus, got {root.tag}")
    entries = []
    for response in root.iter(RESPONSE):
        href = text(response.find(HREF))
        if not href:
            continue
        entry = Entry(href, status_code(text(response.find(STATUS))))
        for propstat in response.iter(PROPSTAT):
            code = status_code(text(propstat.find(STATUS)))
            # A missing status is taken as success: some servers leave it empty.
            if code is not None and not 200 <= code < 300:
                continue
            for prop in propstat.iter(PROP):
                for child in prop:
                    entry.props[child.tag] = child
        entries.append(entry)
    return Multistatus(entries, text(root.find(SYNC_TOKEN)) or None)


def text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def prop_text(entry: Entry, name: str) -> str | None:
    """The text of a property, None when absent or empty (or vdirsyncer's literal ``"None"`` from iCloud)."""
    value = text(entry.props.get(name))
    return value if value and value != "None" else None


def first_href(element: Element | None) -> str | None:
    if element is None:
        return None
    found = element.find(HREF)
    value = text(found)
    return value or None


def child_tags(element: Element | None) -> set[str]:
    return {child.tag for child in element} if element is not None else set()


def privileges(element: Element | None) -> set[str]:
    """Names (Clark notation) of the privileges in a current-user-privilege-set."""
    if element is None:
        return set()
    return {granted.tag for privilege in element.iter(q(DAV, "privilege")) for granted in privilege}


def components(element: Element | None) -> frozenset[str]:
    if element is None:
        return frozenset()
    return frozenset(comp.get("name", "").upper() for comp in element.iter(q(CALDAV, "comp")) if comp.get("name"))


def calendar_data(entry: Entry) -> str | None:
    element = entry.props.get(CALENDAR_DATA)
    # Not text(): calendar data keeps its own whitespace.
    return element.text if element is not None and element.text else None
