"""Refuse bad input before it reaches the engine: oversized bodies, hostile XML and path tricks.

Each refusal is a 4xx with a plain-text message that says what to fix; nothing is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import defusedxml
import defusedxml.ElementTree as DefusedET
from aiohttp import web

logger = logging.getLogger(__name__)

XML_METHODS = frozenset({"PROPFIND", "PROPPATCH", "REPORT", "MKCALENDAR", "MKCOL"})
_ENCODED_SEPARATORS = ("%2f", "%5c", "%00")


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


def make_limits_middleware(max_body_bytes: int) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def limits_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        problem = path_problem(request.raw_path, request.path)
        if problem:
            return bad_request(f"Bad path {request.raw_path!r}: {problem}.")
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
        if body and request.method in XML_METHODS:
            problem = xml_problem(body)
            if problem:
                logger.info("refused %s %s: %s", request.method, request.path, problem)
                return bad_request(f"Bad {request.method} request: {problem}.")
        return await handler(request)

    return limits_middleware
