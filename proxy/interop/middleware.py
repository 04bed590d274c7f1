"""The middleware that dispatches the REPORTs calrelay answers itself (listed in :mod:`.reports`).

A handler may decline a request (return None), and the request then goes on to Radicale unchanged: e.g. a
``sync-collection`` without ``DAV:limit`` or a ``calendar-query`` whose filter Radicale understands. The
free-busy-query is answered by :mod:`proxy.availability.freebusy`, a middleware of its own that runs before
this one. The same middleware rewrites ``schedule-calendar-transp`` in PROPPATCH, MKCALENDAR, MKCOL and
PROPFIND (:mod:`.transp`).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.auth import PRINCIPAL_REQUEST_KEY
from proxy.interop import davxml, principals, synclimit, textsearch, transp
from proxy.keys import ENGINE

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: ``(request, parsed body, forward)`` -> a response, or None to let Radicale answer the request as it is.
#: ``forward(body)`` sends a (rewritten) body to Radicale as the same request and returns its answer.
ReportHandler = Callable[
    [web.Request, ET.Element, Callable[[bytes], Awaitable[web.Response]]], Awaitable[web.StreamResponse | None]
]

_REPORT_HANDLERS: dict[str, ReportHandler] = {
    davxml.DAV + "principal-property-search": principals.principal_property_search,
    davxml.DAV + "principal-search-property-set": principals.principal_search_property_set,
    davxml.DAV + "sync-collection": synclimit.sync_collection,
    davxml.CALDAV + "calendar-query": textsearch.calendar_query,
}

#: The local names, to skip parsing REPORT bodies no handler is interested in.
_LOCAL_NAMES = tuple(tag.rsplit("}", 1)[1].encode() for tag in _REPORT_HANDLERS)
#: The REPORTs dispatched here; each is listed in :data:`proxy.interop.reports.CALRELAY_REPORTS`.
HANDLED_REPORTS = frozenset(_REPORT_HANDLERS)


def make_interop_middleware() -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def interop_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        principal = request.get(PRINCIPAL_REQUEST_KEY)
        if principal is None or request.method not in ("REPORT", "PROPPATCH", "MKCALENDAR", "MKCOL", "PROPFIND"):
            return await handler(request)
        body = await request.read()

        async def forward(new_body: bytes) -> web.Response:
            return davxml.plain(await request.app[ENGINE].handle(request, new_body, principal.name))

        if request.method == "REPORT" and any(name in body for name in _LOCAL_NAMES):
            root = davxml.parse(body)
            report = _REPORT_HANDLERS.get(root.tag) if root is not None else None
            if report is not None:
                assert root is not None
                answer = await report(request, root, forward)
                if answer is not None:
                    return answer
        elif request.method in ("PROPPATCH", "MKCALENDAR", "MKCOL") and transp.mentions(body):
            rewritten = transp.rewrite_request(body)
            if isinstance(rewritten, web.Response):
                return rewritten
            return await forward(rewritten)
        response = await handler(request)
        # Only an allprop PROPFIND or one naming the property can carry it.
        wants_transp = not body.strip() or b"allprop" in body or transp.mentions(body)
        if request.method == "PROPFIND" and wants_transp and isinstance(response, web.Response):
            return transp.rewrite_response(response)
        return response

    return interop_middleware


def setup_interop(app: web.Application) -> None:
    """Add the interop middleware (after authentication and the free-busy middleware)."""
    app.middlewares.append(make_interop_middleware())
