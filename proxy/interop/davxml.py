"""Small WebDAV XML helpers shared by the interop modules (parsing with defusedxml, multistatus bodies)."""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
import zlib

import defusedxml.ElementTree as DefusedET
from aiohttp import web

# Importing Radicale's xmlutils registers its namespace prefixes, so that bodies re-serialized here use the
# same prefixes as Radicale's own answers ("DAV:" as the default namespace, C: for CalDAV).
from radicale import xmlutils  # noqa: F401

DAV = "{DAV:}"
CALDAV = "{urn:ietf:params:xml:ns:caldav}"
CALENDARSERVER = "{http://calendarserver.org/ns/}"

XML_CONTENT_TYPE = "text/xml; charset=utf-8"


def parse(body: bytes) -> ET.Element | None:
    """The root element of ``body``, or None if it is not well-formed XML (the engine reports that)."""
    try:
        return DefusedET.fromstring(body)
    except Exception:
        return None


def serialize(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def xml_response(root: ET.Element, status: int = 207) -> web.Response:
    response = web.Response(status=status, body=serialize(root))
    response.headers["Content-Type"] = XML_CONTENT_TYPE
    return response


def error_response(status: int, condition: str, message: str) -> web.Response:
    """A DAV:error body naming the failed precondition, with a human message in a comment-free element."""
    error = ET.Element(DAV + "error")
    ET.SubElement(error, condition)
    description = ET.SubElement(error, "{urn:calrelay}message")
    description.text = message
    return xml_response(error, status)


def plain(response: web.Response) -> web.Response:
    """``response`` with its body decompressed: Radicale gzips or deflates when the client accepts it."""
    encoding = response.headers.get("Content-Encoding", "").lower()
    if encoding not in ("gzip", "deflate") or response.body is None:
        return response
    raw = bytes(response.body)
    body = gzip.decompress(raw) if encoding == "gzip" else zlib.decompress(raw)
    decoded = web.Response(status=response.status, body=body)
    for key, value in response.headers.items():
        if key.lower() not in ("content-encoding", "content-length"):
            decoded.headers.add(key, value)
    return decoded


def href_of(response: ET.Element) -> str:
    href = response.find(DAV + "href")
    return (href.text or "") if href is not None else ""


def status_response(href: str, status: str) -> ET.Element:
    """``<D:response><D:href/><D:status/></D:response>``."""
    response = ET.Element(DAV + "response")
    ET.SubElement(response, DAV + "href").text = href
    ET.SubElement(response, DAV + "status").text = status
    return response
