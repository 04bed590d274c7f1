"""RFC 6638 §9.1 ``CALDAV:schedule-calendar-transp`` on calendars: stored, served, honoured.

Radicale keeps dead properties as text and would store ``<C:schedule-calendar-transp><C:transparent/>…``
as an empty string. The front door turns the element's child into the text ``transparent`` or ``opaque``
on the way in (PROPPATCH, MKCALENDAR, extended MKCOL), refuses anything else with a 400 that says what to
send, and turns the text back into the child element in PROPFIND answers. The availability engine reads
the stored text (``proxy.model.SCHEDULE_TRANSP_PROP``): a transparent calendar never blocks.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from aiohttp import web

from proxy.interop.davxml import CALDAV, DAV, parse, plain, serialize

TRANSP_TAG = CALDAV + "schedule-calendar-transp"
VALUES = ("opaque", "transparent")


def mentions(body: bytes) -> bool:
    return b"schedule-calendar-transp" in body


def value_of(element: ET.Element) -> str | None:
    """``opaque`` or ``transparent`` from the element's child (or its text), None if neither."""
    children = [child.tag for child in element]
    if len(children) == 1 and children[0] in (CALDAV + value for value in VALUES):
        return children[0][len(CALDAV):]
    text = (element.text or "").strip()
    return text if not children and text in VALUES else None


def rewrite_request(body: bytes) -> bytes | web.Response:
    """The body with each schedule-calendar-transp value as text, or a 400 for a value that is neither."""
    root = parse(body)
    if root is None:
        return body  # malformed: Radicale says so
    for set_element in root.iter(DAV + "set"):
        for element in set_element.iter(TRANSP_TAG):
            value = value_of(element)
            if value is None:
                return web.Response(
                    status=400,
                    text="C:schedule-calendar-transp takes one empty child element: "
                    "<C:opaque/> or <C:transparent/> (RFC 6638 §9.1)\n",
                )
            for child in list(element):
                element.remove(child)
            element.text = value
    return serialize(root)


def rewrite_response(original: web.Response) -> web.Response:
    """A PROPFIND answer with each stored schedule-calendar-transp text as its child element again."""
    if original.status != 207 or original.body is None:
        return original
    response = plain(original)
    body = bytes(response.body) if response.body is not None else b""
    root = parse(body) if b"schedule-calendar-transp>" in body else None
    if root is None:
        return original
    for element in root.iter(TRANSP_TAG):
        value = (element.text or "").strip()
        if value in VALUES and len(element) == 0:
            element.text = None
            ET.SubElement(element, CALDAV + value)
    rewritten = web.Response(status=response.status, body=serialize(root))
    for key, value in response.headers.items():
        if key.lower() != "content-length":
            rewritten.headers.add(key, value)
    return rewritten
