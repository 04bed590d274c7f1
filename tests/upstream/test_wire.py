"""Wire quirks the emulator does not produce, served by a small scripted aiohttp server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.upstream import (
    InvalidSyncToken,
    NotFound,
    Rejected,
    Throttled,
    UpstreamClient,
    normalise_etag,
)
from proxy.upstream.errors import excerpt

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# iCloud style: no prefixes, namespaces redeclared, blank lines, CDATA, an empty status, a 404 propstat,
# and the collection's own response first.
ICLOUD_MULTIGET = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<multistatus xmlns="DAV:">

  <response xmlns="DAV:"><href>/1/calendars/work/</href>
    <propstat><prop><getetag xmlns="DAV:"/></prop><status>HTTP/1.1 200 OK</status></propstat>
    <propstat><prop><calendar-data xmlns="urn:ietf:params:xml:ns:caldav"/></prop>
      <status>HTTP/1.1 404 Not Found</status></propstat>
  </response>

  <response xmlns="DAV:"><href>/1/calendars/work/a%20b.ics</href>
    <propstat><prop><getetag xmlns="DAV:">abc1</getetag>
      <calendar-data xmlns="urn:ietf:params:xml:ns:caldav"><![CDATA[BEGIN:VCALENDAR
UID:x & <y>
END:VCALENDAR
]]></calendar-data></prop><status></status></propstat>
  </response>

  <response xmlns="DAV:"><href>/1/calendars/work/gone.ics</href><status>HTTP/1.1 404 Not Found</status></response>
</multistatus>
"""


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/"))

    yield start
    for server in servers:
        await server.close()


async def test_multistatus_is_parsed_whatever_the_content_type(serve: Callable[[Handler], Awaitable[str]]) -> None:
    seen: list[web.Request] = []
    bodies: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        bodies.append(await request.read())
        return web.Response(status=207, body=ICLOUD_MULTIGET, content_type="text/plain")

    url = await serve(handler)
    async with UpstreamClient(url, "user", "secret", timeout=5) as client:
        wanted = ["/1/calendars/work/a b.ics", "/1/calendars/work/gone.ics"]
        found = await client.fetch(url + "1/calendars/work/", wanted)
    assert list(found) == ["/1/calendars/work/a%20b.ics"]
    item = found["/1/calendars/work/a%20b.ics"]
    assert item.etag == '"abc1"' and "UID:x & <y>" in item.text
    # No whitespace before the prolog (iCloud answers 400), and Basic auth sent up front.
    assert bodies[0].startswith(b"<?xml")
    assert seen[0].headers["Authorization"].startswith("Basic ")


async def test_throttle_with_an_http_date_and_without_retry_after(serve: Callable[[Handler], Awaitable[str]]) -> None:
    answers = [
        web.Response(status=503, headers={"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=90),
                                                                          usegmt=True)}),
        web.Response(status=503, text="<html><title>503</title></html>", content_type="text/html"),
    ]

    async def handler(request: web.Request) -> web.Response:
        return answers.pop(0)

    url = await serve(handler)
    async with UpstreamClient(url, "user", "secret", timeout=5) as client:
        with pytest.raises(Throttled) as dated:
            await client.calendar_state(url)
        with pytest.raises(Throttled) as bare:
            await client.calendar_state(url)
    assert dated.value.retry_after is not None and 80 < dated.value.retry_after <= 90
    assert bare.value.retry_after is None and bare.value.status == 503


async def test_put_without_etag_header_reads_it_back(serve: Callable[[Handler], Awaitable[str]]) -> None:
    puts: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        if request.method == "PUT":
            puts.append(request)
            return web.Response(status=201)
        assert request.headers["Depth"] == "0"
        return web.Response(status=207, content_type="text/xml", body=(
            b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/c/a.ics</D:href>'
            b"<D:propstat><D:prop><D:getetag>W/\"weak\"</D:getetag></D:prop>"
            b"<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"
        ))

    url = await serve(handler)
    async with UpstreamClient(url, "user", "secret", timeout=5) as client:
        assert await client.create("/c/a.ics", "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n") == 'W/"weak"'
    assert puts[0].headers["Content-Type"] == "text/calendar; charset=utf-8"
    assert puts[0].headers["If-None-Match"] == "*"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (409, b"", InvalidSyncToken),
        (403, b'<?xml version="1.0"?><error xmlns="DAV:"><valid-sync-token/></error>', InvalidSyncToken),
        (404, b"<html>no such calendar</html>", NotFound),
    ],
)
async def test_sync_refusals(
    serve: Callable[[Handler], Awaitable[str]], status: int, body: bytes, expected: type[Exception]
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body)

    url = await serve(handler)
    async with UpstreamClient(url, "user", "secret", timeout=5) as client:
        with pytest.raises(expected):
            await client.changes(url + "cal/", "token-1")


async def test_relative_redirect_is_followed_with_the_same_method(serve: Callable[[Handler], Awaitable[str]]) -> None:
    methods: list[tuple[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        methods.append((request.method, request.path))
        if request.path == "/old/":
            raise web.HTTPMovedPermanently("/new/")
        return web.Response(status=207, content_type="text/xml", body=(
            b'<?xml version="1.0"?><multistatus xmlns="DAV:"><response><href>/new/</href><propstat><prop>'
            b'<getctag xmlns="http://calendarserver.org/ns/">c1</getctag><sync-token>s1</sync-token></prop>'
            b"<status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"
        ))

    url = await serve(handler)
    async with UpstreamClient(url, "user", "secret", timeout=5) as client:
        assert await client.calendar_state(url + "old/") == ("c1", "s1")
    assert methods == [("PROPFIND", "/old/"), ("PROPFIND", "/new/")]


async def test_other_client_errors_are_rejected_with_an_excerpt(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=415, text="<html><body><h1>Unsupported   media</h1></body></html>",
                            content_type="text/html")

    url = await serve(handler)
    async with UpstreamClient(url, "user", "secret", timeout=5) as client:
        with pytest.raises(Rejected) as caught:
            await client.create("/c/a.ics", "x")
    assert caught.value.status == 415 and "415" in str(caught.value) and "Unsupported media" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_etag_normalisation_and_excerpts() -> None:
    assert normalise_etag("abc") == '"abc"'
    assert normalise_etag(' "abc" ') == '"abc"'
    assert normalise_etag('W/"abc"') == 'W/"abc"'
    assert excerpt(b"<p>" + b"x" * 500 + b"</p>").endswith("…")


def test_server_url_must_be_absolute() -> None:
    with pytest.raises(ValueError):
        UpstreamClient("caldav.icloud.com", "user", "secret")
