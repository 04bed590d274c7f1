"""Turn HTTP bodies into comparable facts (pure).

A body is flattened into a list of :class:`Fact` lines, ``path = value``, so that two bodies compare as
multisets of lines: order-insensitive (WebDAV multistatus order carries no meaning), and every difference has
a readable address such as ``D:response[/alice/cal/a.ics]/D:propstat[200]/D:prop/D:displayname``.

What legitimately differs between two servers, or two runs of the same server, is marked rather than
dropped: ETags, sync tokens and ctags carry a *variable kind* so that the comparer can bind the recorded value
to the one received (and substitute it into later requests); timestamps are masked; scheme, host and port are
stripped from URLs. Presence is still compared, so a server that stops returning an ETag is noticed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from icalendar import Calendar, Component

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CALSERVER = "http://calendarserver.org/ns/"

#: Short prefixes used in fact paths; other namespaces stay in Clark notation.
_PREFIXES = {
    DAV: "D",
    CALDAV: "C",
    CALSERVER: "CS",
    "http://apple.com/ns/ical/": "A",
    "urn:calrelay": "R",
}

MASKED = "<varies>"


class VarKind(StrEnum):
    """Values that differ between servers and runs but that a later request may quote back."""

    ETAG = "etag"
    SYNC_TOKEN = "sync-token"
    CTAG = "ctag"
    HREF = "href"  # a resource name chosen by the server (POST add-member), learnt from Location


#: XML elements whose text is a variable.
_VARIABLE_ELEMENTS = {
    f"{{{DAV}}}getetag": VarKind.ETAG,
    f"{{{DAV}}}sync-token": VarKind.SYNC_TOKEN,
    f"{{{CALSERVER}}}getctag": VarKind.CTAG,
}
#: XML elements whose text is a timestamp: compared for presence only.
_MASKED_ELEMENTS = {f"{{{DAV}}}getlastmodified", f"{{{DAV}}}creationdate"}
_HREF_ELEMENTS = {f"{{{DAV}}}href"}
_CALENDAR_DATA = f"{{{CALDAV}}}calendar-data"
_RESPONSE = f"{{{DAV}}}response"
_PROPSTAT = f"{{{DAV}}}propstat"
_STATUS = f"{{{DAV}}}status"

#: iCalendar properties that every writer stamps with the time of writing.
MASKED_ICAL_PROPERTIES = frozenset({"DTSTAMP", "CREATED", "LAST-MODIFIED"})

_STATUS_LINE = re.compile(r"HTTP/\d(?:\.\d)?\s+(\d{3})")
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Fact:
    """One comparable line of a body. ``var`` is set when ``value`` is a variable of that kind."""

    path: str
    value: str
    var: VarKind | None = None


class BodyKind(StrEnum):
    EMPTY = "empty"
    XML = "xml"
    ICALENDAR = "icalendar"
    JSON = "json"
    TEXT = "text"
    BINARY = "binary"


def media_type(content_type: str | None) -> str:
    """``text/xml; charset=utf-8`` → ``text/xml``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def body_kind(content_type: str | None, body: bytes) -> BodyKind:
    if not body.strip():
        return BodyKind.EMPTY
    mtype = media_type(content_type)
    if mtype.endswith("/xml") or mtype.endswith("+xml"):
        return BodyKind.XML
    if mtype == "text/calendar":
        return BodyKind.ICALENDAR
    if mtype == "application/json" or mtype.endswith("+json"):
        return BodyKind.JSON
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return BodyKind.BINARY
    # Servers do not always label their bodies; sniff the two formats CalDAV is made of.
    stripped = text.lstrip()
    unlabelled = mtype in ("", "application/octet-stream")
    if stripped.startswith("<?xml") or (stripped.startswith("<") and unlabelled):
        return BodyKind.XML
    if stripped.upper().startswith("BEGIN:VCALENDAR"):
        return BodyKind.ICALENDAR
    return BodyKind.TEXT


def strip_origin(url: str) -> str:
    """``http://host:5232/alice/%40cal/`` → ``/alice/@cal/``: hosts and ports differ between servers."""
    path = _ORIGIN.sub("", url.strip()) or "/"
    return unquote(path)


def status_code(text: str) -> str:
    """``HTTP/1.1 404 Not Found`` → ``404``: reason phrases vary between servers."""
    match = _STATUS_LINE.search(text)
    return match.group(1) if match else text.strip()


def _short(tag: str) -> str:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        prefix = _PREFIXES.get(namespace)
        return f"{prefix}:{local}" if prefix else tag
    return tag


# --- XML -------------------------------------------------------------------------------------------------


def xml_facts(text: str | bytes) -> list[Fact]:
    """Facts of an XML document; ValueError when it is not well-formed (or is hostile: entities, DTDs)."""
    try:
        root = SafeET.fromstring(text)
    except (SafeET.ParseError, DefusedXmlException) as error:
        raise ValueError(f"not well-formed XML: {error}") from error
    facts: list[Fact] = []
    _element_facts(root, "", facts)
    return facts


def _element_facts(element: Element, parent: str, facts: list[Fact]) -> None:
    segment = _short(element.tag)
    if element.tag == _RESPONSE:
        # Address each multistatus response by its href so that order does not matter and diffs say which.
        hrefs = [strip_origin(child.text or "") for child in element if child.tag in _HREF_ELEMENTS]
        if hrefs:
            segment += f"[{' '.join(sorted(hrefs))}]"
    elif element.tag == _PROPSTAT:
        status = next((child.text or "" for child in element if child.tag == _STATUS), "")
        segment += f"[{status_code(status)}]"
    path = f"{parent}/{segment}" if parent else segment
    for name, value in sorted(element.attrib.items()):
        facts.append(Fact(f"{path}/@{_short(name)}", value))
    children = list(element)
    text = (element.text or "").strip()
    if element.tag == _CALENDAR_DATA and text:
        facts.extend(ical_facts(text, prefix=path))
        return
    if children:
        for child in children:
            _element_facts(child, path, facts)
        if text:  # mixed content does not occur in WebDAV, but keep it rather than hide it
            facts.append(Fact(path, text))
        return
    facts.append(_leaf_fact(element.tag, path, text))


def _leaf_fact(tag: str, path: str, text: str) -> Fact:
    if tag in _VARIABLE_ELEMENTS:
        return Fact(path, text, _VARIABLE_ELEMENTS[tag])
    if tag in _MASKED_ELEMENTS:
        return Fact(path, MASKED if text else "")
    if tag in _HREF_ELEMENTS:
        return Fact(path, strip_origin(text))
    if tag == _STATUS:
        return Fact(path, status_code(text))
    return Fact(path, text)


# --- iCalendar -------------------------------------------------------------------------------------------


def ical_facts(text: str | bytes, prefix: str = "") -> list[Fact]:
    """Facts of an iCalendar object: each component addressed by its UID (and RECURRENCE-ID) or TZID.

    Property values are compared as icalendar re-serialises them (line folding, parameter order and escaping
    no longer matter); DTSTAMP, CREATED and LAST-MODIFIED are compared for presence only.
    """
    try:
        calendars = Calendar.from_ical(text, multiple=True)
    except ValueError as error:
        raise ValueError(f"not valid iCalendar: {error}") from error
    facts: list[Fact] = []
    for calendar in calendars:
        _component_facts(calendar, prefix, facts)
    return facts


def _component_key(component: Component) -> str:
    for name in ("UID", "TZID"):
        if name in component:
            key = f"{name.lower()}={component[name]}"
            if "RECURRENCE-ID" in component:
                key += f",recurrence-id={component['RECURRENCE-ID'].to_ical().decode()}"
            return f"{component.name}[{key}]"
    return component.name


def _component_facts(component: Component, parent: str, facts: list[Fact]) -> None:
    path = f"{parent}/{_component_key(component)}" if parent else _component_key(component)
    for name, value in component.property_items(recursive=False, sorted=True):
        if name in ("BEGIN", "END"):
            continue
        params = getattr(value, "params", {})
        param_text = "".join(f";{key.upper()}={params[key]}" for key in sorted(params, key=str.upper))
        if name in MASKED_ICAL_PROPERTIES:
            rendered = MASKED
        else:
            rendered = value.to_ical().decode() if hasattr(value, "to_ical") else str(value)
        facts.append(Fact(f"{path}/{name}{param_text}", rendered))
    for sub in component.subcomponents:
        _component_facts(sub, path, facts)


# --- JSON and text ---------------------------------------------------------------------------------------


def json_facts(text: str | bytes) -> list[Fact]:
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ValueError(f"not valid JSON: {error}") from error
    facts: list[Fact] = []
    _json_value_facts(document, "$", facts)
    return facts


def _json_value_facts(value: object, path: str, facts: list[Fact]) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _json_value_facts(value[key], f"{path}.{key}", facts)
        if not value:
            facts.append(Fact(path, "{}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _json_value_facts(item, f"{path}[{index}]", facts)
        if not value:
            facts.append(Fact(path, "[]"))
    else:
        facts.append(Fact(path, json.dumps(value)))


def text_facts(text: str) -> list[Fact]:
    """Plain text, compared line by line with surrounding whitespace ignored."""
    return [Fact(f"line {number}", line.strip()) for number, line in enumerate(text.strip().splitlines(), 1)]


def body_facts(content_type: str | None, body: bytes) -> tuple[BodyKind, list[Fact]]:
    """The kind of a body and its facts. A body that does not parse as its declared kind is compared as
    text, so that a server returning garbage is reported, not crashed on."""
    kind = body_kind(content_type, body)
    parsers = {BodyKind.XML: xml_facts, BodyKind.ICALENDAR: ical_facts, BodyKind.JSON: json_facts}
    if kind in parsers:
        try:
            return kind, parsers[kind](body)
        except ValueError:
            kind = BodyKind.TEXT
    if kind is BodyKind.EMPTY:
        return kind, []
    if kind is BodyKind.BINARY:
        return kind, [Fact("binary", f"{len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()[:16]}")]
    return BodyKind.TEXT, text_facts(body.decode("utf-8", errors="replace"))
