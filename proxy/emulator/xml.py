"""iCloud-style WebDAV XML: rendering responses and reading (untrusted) request bodies.

iCloud writes no namespace prefixes: every response and every property element redeclares its default
namespace (``<response xmlns="DAV:">``, ``<getctag xmlns="http://calendarserver.org/ns/">``), the prolog says
``standalone="yes"``, the output is padded with blank lines, and calendar data sits in ``<![CDATA[...]]>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from defusedxml import ElementTree as SafeElementTree

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CALSERVER = "http://calendarserver.org/ns/"
APPLE_ICAL = "http://apple.com/ns/ical/"

PROLOG = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


def tag(namespace: str, name: str) -> str:
    """Clark notation, as ElementTree uses: ``{DAV:}href``."""
    return f"{{{namespace}}}{name}"


def split_tag(clark: str) -> tuple[str, str]:
    if clark.startswith("{"):
        namespace, _, name = clark[1:].partition("}")
        return namespace, name
    return "", clark


@dataclass
class Element:
    """An output element; ``declare`` forces an ``xmlns`` even when the parent has the same namespace."""

    tag: str
    children: list[Element] = field(default_factory=list)
    text: str | None = None
    cdata: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    declare: bool = False


def el(namespace: str, name: str, /, *children: Element, text: str | None = None, **attributes: str) -> Element:
    return Element(tag(namespace, name), list(children), text=text, attributes=attributes)


def prop(
    namespace: str, name: str, /, *children: Element, text: str | None = None, **attributes: str
) -> Element:
    """A property element: always carries its own ``xmlns``, as iCloud's are."""
    element = el(namespace, name, *children, text=text, **attributes)
    element.declare = True
    return element


def href(value: str, **attributes: str) -> Element:
    return el(DAV, "href", text=value, **attributes)


def empty(clark: str) -> Element:
    return Element(clark, declare=True)


def _render(element: Element, parent_namespace: str | None, out: list[str], depth: int) -> None:
    namespace, name = split_tag(element.tag)
    attributes = ""
    if element.declare or namespace != parent_namespace:
        attributes += f' xmlns="{namespace}"'
    for key, value in element.attributes.items():
        attributes += f" {key}={quoteattr(value)}"
    if not element.children and element.text is None and element.cdata is None:
        out.append(f"<{name}{attributes}/>")
        return
    out.append(f"<{name}{attributes}>")
    if element.text is not None:
        out.append(escape(element.text))
    if element.cdata is not None:
        # "]]>" cannot appear inside a CDATA section: split it across two sections.
        out.append("<![CDATA[" + element.cdata.replace("]]>", "]]]]><![CDATA[>") + "]]>")
    # iCloud pads structure (multistatus/response/propstat/prop) with blank lines, not leaf values.
    padded = name in ("multistatus", "response", "propstat", "prop") and namespace == DAV
    for child in element.children:
        if padded:
            out.append("\n\n" + "    " * (depth + 1))
        _render(child, namespace, out, depth + 1)
    if padded and element.children:
        out.append("\n" + "    " * depth)
    out.append(f"</{name}>")


def render(root: Element) -> bytes:
    root.declare = True
    out: list[str] = [PROLOG]
    _render(root, None, out, 0)
    out.append("\n")
    return "".join(out).encode("utf-8")


# -- multistatus building blocks ----------------------------------------------------------------------

OK = "HTTP/1.1 200 OK"
NOT_FOUND = "HTTP/1.1 404 Not Found"
FORBIDDEN = "HTTP/1.1 403 Forbidden"


def propstat(properties: list[Element], status: str) -> Element:
    return el(DAV, "propstat", el(DAV, "prop", *properties), el(DAV, "status", text=status))


def response(
    target: str, found: list[Element], missing: list[str], failed: list[str] | None = None
) -> Element:
    """A ``<response>`` with the found properties in a 200 propstat and the undefined ones, as empty elements,
    in a separate 404 propstat."""
    node = el(DAV, "response", href(target))
    node.declare = True
    node.children.append(propstat(found, OK))
    if missing:
        node.children.append(propstat([empty(name) for name in missing], NOT_FOUND))
    if failed:
        node.children.append(propstat([empty(name) for name in failed], FORBIDDEN))
    return node


def status_response(target: str, status: str) -> Element:
    node = el(DAV, "response", href(target), el(DAV, "status", text=status))
    node.declare = True
    return node


def multistatus(responses: list[Element], *extra: Element) -> bytes:
    return render(el(DAV, "multistatus", *responses, *extra))


def error_body(*conditions: Element) -> bytes:
    return render(el(DAV, "error", *conditions))


# -- request parsing --------------------------------------------------------------------------------


class BadXML(ValueError):
    pass


def parse(body: bytes) -> ElementTree.Element:
    # iCloud answers 400 when a REPORT body has whitespace before the XML declaration.
    if body[:1].isspace() and body.lstrip().startswith(b"<?xml"):
        raise BadXML("whitespace before the XML declaration")
    try:
        return SafeElementTree.fromstring(body)
    except (ElementTree.ParseError, ValueError) as error:
        raise BadXML(str(error)) from error


def requested_properties(root: ElementTree.Element | None) -> list[str] | None:
    """The Clark names in ``<prop>``, or None for allprop/propname/an empty body."""
    if root is None:
        return None
    prop_element = root.find(tag(DAV, "prop"))
    if prop_element is None:
        return None
    return [child.tag for child in prop_element]
