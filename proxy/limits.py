"""Refuse bad input before it reaches the engine: oversized bodies, hostile XML and path tricks.

Each refusal is a 4xx with a plain-text message that says what to fix; nothing is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import unquote, urlsplit
from xml.parsers import expat

import defusedxml
import defusedxml.ElementTree as DefusedET
from aiohttp import web

from proxy.config import LimitsSettings
from proxy.validation import body_problem

logger = logging.getLogger(__name__)

XML_METHODS = frozenset({"PROPFIND", "PROPPATCH", "REPORT", "MKCALENDAR", "MKCOL"})
_ENCODED_SEPARATORS = ("%2f", "%5c", "%00")
_DAV, _CALDAV, _CARDDAV = "DAV:", "urn:ietf:params:xml:ns:caldav", "urn:ietf:params:xml:ns:carddav"
#: The REPORTs the engine serves; any other root element is refused before Radicale answers 207 to it.
KNOWN_REPORTS = frozenset(
    {
        f"{_DAV} sync-collection", f"{_DAV} expand-property", f"{_DAV} principal-property-search",
        f"{_DAV} principal-search-property-set", f"{_DAV} acl-principal-prop-set", f"{_DAV} principal-match",
        f"{_CALDAV} calendar-query", f"{_CALDAV} calendar-multiget", f"{_CALDAV} free-busy-query",
        f"{_CARDDAV} addressbook-query", f"{_CARDDAV} addressbook-multiget",
    }
)
#: The root element each XML method requires (a PROPFIND may also come without a body: allprop).
_ROOTS = {
    "PROPFIND": frozenset({f"{_DAV} propfind"}),
    "PROPPATCH": frozenset({f"{_DAV} propertyupdate"}),
    "MKCALENDAR": frozenset({f"{_CALDAV} mkcalendar"}),
    "MKCOL": frozenset({f"{_DAV} mkcol"}),
    "REPORT": KNOWN_REPORTS,
}
_BODY_REQUIRED = frozenset({"PROPPATCH", "REPORT"})


class _XMLTooLarge(Exception):
    pass


def xml_shape_problem(body: bytes, max_depth: int, max_elements: int) -> tuple[str | None, str | None]:
    """(problem, root element as "namespace name"). Counts depth and elements with expat's streaming
    parser, which keeps no tree and does not recurse, so a 100,000-deep body costs no stack."""
    parser = expat.ParserCreate(namespace_separator=" ")
    state = {"depth": 0, "elements": 0, "root": None}

    def start(name: str, attributes: object) -> None:
        state["depth"] += 1
        state["elements"] += 1
        if state["root"] is None:
            state["root"] = name if " " in name else f" {name}"
        if state["depth"] > max_depth:
            raise _XMLTooLarge(f"the XML body nests elements deeper than {max_depth} (limits.max_xml_depth)")
        if state["elements"] > max_elements:
            raise _XMLTooLarge(f"the XML body has more than {max_elements} elements (limits.max_xml_elements)")

    def end(name: str) -> None:
        state["depth"] -= 1

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    # DTDs and entities are judged by defusedxml afterwards; here they must not be expanded.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.DefaultHandler = lambda data: None  # with a default handler, expat reports entities unexpanded
    try:
        parser.Parse(body, True)
    except _XMLTooLarge as error:
        return str(error), state["root"]
    except expat.ExpatError:
        return None, state["root"]  # malformed: defusedxml's parse names the error
    return None, state["root"]


def header_problem(request: web.Request, limits: LimitsSettings) -> str | None:
    headers = request.raw_headers
    if len(headers) > limits.max_headers:
        return f"the request has {len(headers)} header lines, more than {limits.max_headers} (limits.max_headers)"
    size = sum(len(name) + len(value) for name, value in headers)
    if size > limits.max_header_bytes:
        return f"the request headers are {size} bytes, more than {limits.max_header_bytes} (limits.max_header_bytes)"
    return None


def same_destination(request: web.Request) -> bool:
    """Whether a MOVE or COPY names its own source as the destination (RFC 4918 wants 403)."""
    destination = request.headers.get("Destination", "")
    if not destination:
        return False
    target = unquote(urlsplit(destination).path or "")
    return target.rstrip("/") == request.path.rstrip("/")


def bad_request(message: str, status: int = 400, close: bool = False) -> web.Response:
    response = web.Response(status=status, text=message + "\n")
    if close:  # the unread body would otherwise have to be drained before the connection is reused
        response.force_close()
    return response


def path_problem(raw_path: str, path: str) -> str | None:
    """Why a request path is refused, or None. ``raw_path`` is as sent, ``path`` percent-decoded."""
    lowered = raw_path.split("?", 1)[0].lower()
    if any(marker in lowered for marker in _ENCODED_SEPARATORS):
        return "the path contains an encoded '/', '\\' or NUL; send plain path segments"
    if "\x00" in path or "\\" in path:
        return "the path contains a NUL or a backslash"
    if any(segment in (".", "..") for segment in path.split("/")):
        return "the path contains '.' or '..' segments; send the collection or object path itself"
    if "//" in path:
        return "the path contains an empty segment ('//')"
    return None


def xml_problem(body: bytes) -> str | None:
    """Why an XML request body is refused, or None. Parses with defusedxml: no DTDs, no entities."""
    try:
        DefusedET.fromstring(body, forbid_dtd=True)
    except defusedxml.DTDForbidden:
        return "the XML body contains a DTD; DTDs and entity declarations are not accepted"
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden):
        return "the XML body declares or references entities; these are not accepted"
    except DefusedET.ParseError as error:
        return f"the XML body is not well-formed: {error}"
    return None


def xml_body_problem(method: str, body: bytes, limits: LimitsSettings) -> str | None:
    """Why the XML body of ``method`` is refused, or None: empty where a body is required, too deep or too
    many elements, DTDs or entities, malformed, or a root element the method does not take."""
    if not body.strip():
        if method in _BODY_REQUIRED:
            return f"the body is empty; a {method} needs an XML body"
        return None
    problem, root = xml_shape_problem(body, limits.max_xml_depth, limits.max_xml_elements)
    if problem:
        return problem
    problem = xml_problem(body)
    if problem:
        return problem
    if root is not None and root not in _ROOTS[method]:
        namespace, _, name = root.partition(" ")
        shown = f"{{{namespace}}}{name}" if namespace else name
        if method == "REPORT":
            return (
                f"unknown REPORT {shown}; supported: calendar-query, calendar-multiget, free-busy-query, "
                "sync-collection"
            )
        return f"the root element {shown} is not what a {method} takes"
    return None


def make_limits_middleware(
    max_body_bytes: int, limits: LimitsSettings | None = None
) -> Callable[..., Awaitable[web.StreamResponse]]:
    ceilings = limits or LimitsSettings()

    @web.middleware
    async def limits_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        problem = header_problem(request, ceilings)
        if problem:
            return bad_request(f"Request headers too large: {problem}.", status=431, close=True)
        problem = path_problem(request.raw_path, request.path)
        if problem:
            return bad_request(f"Bad path {request.raw_path!r}: {problem}.")
        if request.method in ("MOVE", "COPY") and same_destination(request):
            return bad_request(f"{request.method} onto itself: the Destination must differ from the source.", 403)
        too_large = (
            f"Request body too large: the limit is {max_body_bytes} bytes (server.max_body_bytes). "
            "Split the upload, e.g. one event per PUT."
        )
        if (request.content_length or 0) > max_body_bytes:
            return bad_request(too_large, status=413, close=True)
        try:
            body = await request.read()  # cached by aiohttp for the handlers that follow
        except web.HTTPRequestEntityTooLarge:
            return bad_request(too_large, status=413, close=True)
        if request.method in XML_METHODS:
            problem = xml_body_problem(request.method, body, ceilings)
            if problem:
                logger.info("refused %s %s: %s", request.method, request.path, problem)
                return bad_request(f"Bad {request.method} request: {problem}.")
        if request.method == "PUT" and not request.path.endswith("/") and not request.path.startswith("/api/"):
            problem = body_problem(request.headers.get("Content-Type", ""), body, ceilings)
            if problem:
                logger.info("refused PUT %s: %s", request.path, problem)
                return bad_request(f"Bad calendar object: {problem}.")
        return await handler(request)

    return limits_middleware
