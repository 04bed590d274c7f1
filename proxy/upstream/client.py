"""The CalDAV client the relay uses to talk to iCloud (or the emulator, or any standard CalDAV server).

python-caldav's async client does the HTTP: connection pooling (niquests), Basic auth, timeouts. We send every
request through its raw ``request()`` and read status, headers and body ourselves, because its higher-level
parsers decode hrefs, drop ETag headers and turn statuses into generic errors; the relay needs exact outcomes.
No request is retried here (the relay owns retries and back-off); only 3xx redirects are followed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from caldav.aio import AsyncDAVClient
from caldav.lib import error as caldav_error
from lxml.etree import XMLSyntaxError
from niquests import AsyncSession, Response
from niquests.exceptions import RequestException, TooManyRedirects

from proxy.upstream import xml
from proxy.upstream.errors import (
    InvalidSyncToken,
    NotFound,
    PreconditionFailed,
    ResponseTooLarge,
    Throttled,
    TransientError,
    UpstreamError,
    error_for_status,
)
from proxy.upstream.models import Account, Changes, RemoteCalendar, RemoteObject

log = logging.getLogger(__name__)


class _QuietNonXmlBodies(logging.Filter):
    """python-caldav logs every non-XML body (iCloud's HTML error pages, a throttled 503) with the root logger
    at INFO, with a full lxml traceback. The client reports those answers itself (``throttled (HTTP 503…)``),
    so the message is kept only when python-caldav's own logger is at DEBUG (``calrelay -vv``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and str(record.msg).startswith("Expected some valid XML from the server"):
            return logging.getLogger("caldav").isEnabledFor(logging.DEBUG)
        return True


# Installed once, where python-caldav logs it: on the root logger (a logger's filters see its own records).
if not any(isinstance(f, _QuietNonXmlBodies) for f in logging.getLogger().filters):
    logging.getLogger().addFilter(_QuietNonXmlBodies())

MULTIGET_BATCH = 50
MAX_REDIRECTS = 5
# RFC 6578 §3.6 lets a server truncate a sync reply (507 on the collection); we ask again with the new token.
MAX_SYNC_PAGES = 100
# Connections kept per host; the relay runs 8–16 writes at once, and a full pool would discard connections.
POOL_SIZE = 32
WIRE_SAFE = "/%:@!$&'()*+,;="  # RFC 3986 pchar besides unreserved; "%" keeps existing escapes
CALENDAR_TYPE = "text/calendar; charset=utf-8"
XML_TYPE = 'application/xml; charset="utf-8"'
WRITE_PRIVILEGES = {xml.q(xml.DAV, "write"), xml.q(xml.DAV, "write-content"), xml.q(xml.DAV, "bind"),
                    xml.q(xml.DAV, "all")}
DEFAULT_COMPONENTS = frozenset({"VEVENT", "VTODO", "VJOURNAL"})  # RFC 4791 §5.2.3: absent means any
#: Default of ``[upstream] max_response_bytes``.
MAX_RESPONSE_BYTES = 10_000_000
_READ_CHUNK = 65_536


class _BoundedSession(AsyncSession):
    """A session that reads at most ``max_response_bytes`` of any answer (after decompression).

    niquests reads a whole body into memory before python-caldav sees it, so an answer of any size (a listing
    of a huge calendar, one giant object, a proxy's endless stream) would be held whole. Here the body is
    streamed and the read stops at the cap with :class:`ResponseTooLarge`; a body within it is handed on as
    the ordinary, fully read response python-caldav expects.
    """

    def __init__(self, max_response_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_response_bytes = max_response_bytes

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["stream"] = True
        streamed = await super().request(method, url, *args, **kwargs)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in await streamed.iter_content(_READ_CHUNK):
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise ResponseTooLarge(
                        f"{method} {url}: the answer (HTTP {streamed.status_code}) is larger than "
                        f"{self.max_response_bytes:,} bytes ([upstream] max_response_bytes); not read further",
                        streamed.status_code,
                    )
                chunks.append(chunk)
        finally:
            await streamed.close()
        read = Response()
        read.__dict__.update(streamed.__dict__)
        read._content, read._content_consumed = b"".join(chunks), True
        return read


class _Transport(AsyncDAVClient):
    """python-caldav's async client with a session suited to the relay.

    niquests follows redirects like a browser: a 302 turns PROPFIND into GET, 301 drops the body and a new host
    loses the Authorization header. iCloud needs the same method, body and credentials on the partition host,
    so niquests must not follow (``max_redirects = 0`` makes it raise ``TooManyRedirects`` carrying the 3xx)
    and :meth:`UpstreamClient._send` follows instead. ``_create_session`` is python-caldav's own hook for this.
    """

    #: Called with (method, status or failure, seconds) after every request (the metrics hook).
    observer: Callable[[str, str, float], None] | None = None

    def __init__(self, *, max_response_bytes: int, **kwargs: Any) -> None:
        self.max_response_bytes = max_response_bytes  # before python-caldav's __init__ creates the session
        super().__init__(**kwargs)

    def _create_session(self) -> None:
        self.session = _BoundedSession(self.max_response_bytes, multiplexed=False, pool_maxsize=POOL_SIZE)
        self.session.max_redirects = 0

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        if self.observer is None:
            return await super().request(*args, **kwargs)
        method = str(args[1] if len(args) > 1 else kwargs.get("method", "GET"))
        started, outcome = time.monotonic(), "error"
        try:
            response = await super().request(*args, **kwargs)
            outcome = str(response.status)
            return response
        except TooManyRedirects as redirect:
            outcome = str(getattr(redirect.response, "status_code", "redirect"))
            raise
        except caldav_error.DAVError as failure:
            outcome = str(failure.status or "error")
            raise
        except (TimeoutError, RequestException, OSError) as failure:
            outcome = type(failure).__name__
            raise
        finally:
            self.observer(method, outcome, time.monotonic() - started)


@dataclass
class _Reply:
    url: str  # the URL that finally answered (after redirects)
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def multistatus(self, what: str) -> xml.Multistatus:
        try:
            return xml.parse_multistatus(self.body)
        except xml.MalformedResponse as error:
            # Most likely cut short on the way (a proxy, a dropped connection): worth another try later.
            raise TransientError(f"{what}: HTTP {self.status} with an unreadable multistatus ({error})",
                                 self.status) from error


def normalise_etag(etag: str) -> str:
    """Strip whitespace and make sure the value is quoted (iCloud's are short opaque strings, usually quoted)."""
    etag = etag.strip()
    if etag.startswith("W/"):
        return etag
    return '"' + etag.strip('"') + '"'


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))


def _same_path(left: str, right: str) -> bool:
    return unquote(left).rstrip("/") == unquote(right).rstrip("/")


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


class UpstreamClient:
    """One account on one CalDAV server. Safe for many concurrent calls on one event loop.

    Object hrefs may be given as absolute URLs or as paths; a path is resolved against the origin of the
    calendar home found by :meth:`discover` (iCloud's partition host), or of ``server_url`` before that.
    """

    def __init__(
        self,
        server_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 30.0,
        observer: Callable[[str, str, float], None] | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        parts = urlsplit(server_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("server_url must be an absolute http(s) URL, e.g. https://caldav.icloud.com/")
        # Credentials in the URL would leak into every message; they come from the arguments only.
        netloc = parts.netloc.rsplit("@", 1)[-1]
        self.server_url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        self._origin = _origin(self.server_url)
        self._dav = _Transport(
            url=self.server_url,
            username=username,
            password=password,
            # Preemptive Basic: no unauthenticated round trip, and iCloud's two challenges (Basic and
            # X-MobileMe-AuthToken) never need negotiating. It also keeps python-caldav from mutating its auth
            # state under concurrent requests, and from probing with a GET when a connection drops.
            auth_type="basic",
            timeout=timeout,  # type: ignore[arg-type]  # niquests takes float seconds
            rate_limit_handle=False,
            enable_rfc6764=False,
            # Known answer, so python-caldav never tears the shared session down to retry a 401 without HTTP/2.
            features={"http.multiplexing": "unsupported"},
            max_response_bytes=max_response_bytes,
        )
        self._dav.observer = observer

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._dav.close()

    def use_home(self, url: str) -> None:
        """Resolve object paths against the origin of ``url``, a calendar URL found by an earlier
        :meth:`discover` (at link time): iCloud serves a home on its partition host, not the discovery host."""
        self._origin = _origin(url)

    # -- transport -----------------------------------------------------------------------------------

    def _url(self, href: str) -> str:
        return urljoin(self._origin, href)

    async def _send(
        self, method: str, url: str, body: str = "", headers: Mapping[str, str] | None = None
    ) -> _Reply:
        """One request (plus any redirects); 401, throttling and network failures raise, other statuses return."""
        for _ in range(MAX_REDIRECTS + 1):
            what = f"{method} {url}"
            try:
                response = await self._dav.request(url, method, body, headers)
            except TooManyRedirects as redirect:
                url = self._redirect_target(what, redirect)
                continue
            except caldav_error.RateLimitError as throttled:
                log.info("%s: throttled (HTTP %s, Retry-After %s)", what, throttled.status, throttled.retry_after)
                raise Throttled(
                    f"{what}: HTTP {throttled.status} — throttled, Retry-After {throttled.retry_after}",
                    throttled.status,
                    throttled.retry_after_seconds,
                ) from None
            except caldav_error.AuthorizationError as refused:
                if refused.status == 403:
                    # python-caldav raises on 403, but a 403 can mean "bad sync token": let the caller decide.
                    raw = refused.body or b""
                    return _Reply(url, 403, {}, raw.encode() if isinstance(raw, str) else raw)
                log.warning("%s: authentication refused (HTTP %s)", what, refused.status)
                raise error_for_status(refused.status or 401, what) from None
            except (TimeoutError, RequestException, OSError) as failure:
                log.info("%s: %s", what, type(failure).__name__)
                raise TransientError(f"{what}: {type(failure).__name__}: {failure}") from None
            except XMLSyntaxError as failure:
                # python-caldav refuses a body labelled XML that is not; a proxy cut it short, most likely.
                raise TransientError(f"{what}: the server sent malformed XML ({failure})") from None
            except caldav_error.DAVError as failure:
                raise UpstreamError(f"{what}: {failure}", failure.status) from None
            log.debug("%s -> %s", what, response.status)
            raw = response._raw
            payload = raw.encode() if isinstance(raw, str) else bytes(raw or b"")
            return _Reply(url, response.status, response.headers or {}, payload)
        raise UpstreamError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")

    @staticmethod
    def _redirect_target(what: str, redirect: TooManyRedirects) -> str:
        response: Any = redirect.response
        location = response.headers.get("Location") if response is not None else None
        if not location:
            raise UpstreamError(f"{what}: a redirect without a Location", getattr(response, "status_code", None))
        target = urljoin(str(response.url), location)
        if urlsplit(str(response.url)).scheme == "https" and urlsplit(target).scheme != "https":
            # Re-sending Basic credentials over plain HTTP would expose them.
            raise UpstreamError(f"{what}: refusing a redirect from HTTPS to {target}", response.status_code)
        log.info("%s: HTTP %s, following to %s", what, response.status_code, target)
        return target

    async def _propfind(self, url: str, body: str, depth: int) -> _Reply:
        reply = await self._send("PROPFIND", url, body, {"Depth": str(depth), "Content-Type": XML_TYPE})
        if reply.status != 207:
            raise error_for_status(reply.status, f"PROPFIND {url}", reply.body)
        return reply

    # -- discovery ----------------------------------------------------------------------------------

    async def discover(self) -> Account:
        reply = await self._propfind(self.server_url, xml.PRINCIPAL_BODY, 0)
        principal_href = next(
            (href for e in reply.multistatus("PROPFIND principal").entries
             if (href := xml.first_href(e.props.get(xml.CURRENT_USER_PRINCIPAL)))),
            None,
        )
        if principal_href is None:
            raise UpstreamError(f"PROPFIND {self.server_url}: the server named no current-user-principal")
        principal_url = urljoin(reply.url, principal_href)

        reply = await self._propfind(principal_url, xml.HOME_SET_BODY, 0)
        home_href = next(
            (href for e in reply.multistatus("PROPFIND calendar-home-set").entries
             if (href := xml.first_href(e.props.get(xml.CALENDAR_HOME_SET)))),
            None,
        )
        if home_href is None:
            raise UpstreamError(f"PROPFIND {principal_url}: the principal has no calendar-home-set")
        # iCloud's home set is an absolute URL on a partition host (pNN-caldav.icloud.com:443): follow it.
        home_url = _with_slash(urljoin(reply.url, home_href))

        reply = await self._propfind(home_url, xml.HOME_LISTING_BODY, 1)
        home_url = _with_slash(reply.url)  # where the home actually answered, if it redirected
        self._origin = _origin(home_url)
        calendars = tuple(
            calendar
            for entry in reply.multistatus(f"PROPFIND {home_url}").entries
            if (calendar := self._calendar(home_url, principal_href, entry)) is not None
        )
        log.info(
            "discovered %d calendars at %s: %s", len(calendars), home_url, ", ".join(c.name for c in calendars)
        )
        return Account(principal_url, home_url, calendars)

    @staticmethod
    def _calendar(home_url: str, principal_href: str, entry: xml.Entry) -> RemoteCalendar | None:
        url = _with_slash(urljoin(home_url, entry.href))
        if _same_path(urlsplit(url).path, urlsplit(home_url).path):
            return None
        types = xml.child_tags(entry.props.get(xml.RESOURCETYPE))
        subscribed = xml.SUBSCRIBED in types
        # Inbox, outbox and notification collections are not calendars (and iCloud lists subscriptions
        # without C:calendar).
        if xml.CALENDAR not in types and not subscribed:
            return None
        owner = xml.first_href(entry.props.get(xml.OWNER))
        shared = xml.SHARED in types or (owner is not None and not _same_path(owner, principal_href))
        privileges = xml.privileges(entry.props.get(xml.PRIVILEGES))
        name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
        return RemoteCalendar(
            url=url,
            name=name,
            display_name=xml.prop_text(entry, xml.DISPLAYNAME) or name,
            color=xml.prop_text(entry, xml.COLOR),
            components=xml.components(entry.props.get(xml.COMPONENTS)) or DEFAULT_COMPONENTS,
            writable=not subscribed and bool(privileges & WRITE_PRIVILEGES),
            shared=shared,
            subscribed=subscribed,
            ctag=xml.prop_text(entry, xml.GETCTAG),
            sync_token=xml.prop_text(entry, xml.SYNC_TOKEN),
        )

    # -- collection state ---------------------------------------------------------------------------

    async def calendar_state(self, calendar_url: str) -> tuple[str | None, str | None]:
        """``(ctag, sync_token)`` of one calendar."""
        reply = await self._propfind(calendar_url, xml.STATE_BODY, 0)
        entries = reply.multistatus(f"PROPFIND {calendar_url}").entries
        path = urlsplit(calendar_url).path
        entry = next((e for e in entries if _same_path(self._path(calendar_url, e.href), path)), None)
        if entry is None and entries:
            entry = entries[0]
        if entry is None:
            return None, None
        return xml.prop_text(entry, xml.GETCTAG), xml.prop_text(entry, xml.SYNC_TOKEN)

    @staticmethod
    def _path(base_url: str, href: str) -> str:
        """An href as a wire path: absolute, without scheme and host, characters HTTP forbids percent-encoded
        (existing escapes are kept, so a server's own spelling survives)."""
        return quote(urlsplit(urljoin(base_url, href.strip())).path, safe=WIRE_SAFE)

    async def changes(self, calendar_url: str, token: str | None) -> Changes:
        """What changed since ``token`` (sync-collection REPORT); ``None`` or ``""`` lists everything."""
        collection = urlsplit(calendar_url).path
        changed: dict[str, str] = {}
        deleted: set[str] = set()
        current = token or None
        new_token: str | None = None
        for _ in range(MAX_SYNC_PAGES):
            what = f"REPORT sync-collection {calendar_url}"
            reply = await self._send(
                "REPORT", calendar_url, xml.sync_collection_body(current),
                {"Depth": "1", "Content-Type": XML_TYPE},
            )
            if reply.status != 207:
                raise self._sync_error(reply, what, current)
            result = reply.multistatus(what)
            truncated = False
            for entry in result.entries:
                path = self._path(calendar_url, entry.href)
                if _same_path(path, collection):
                    # iCloud adds a response for the collection itself; a 507 there means "truncated".
                    truncated = entry.status == 507
                    continue
                if entry.status == 404:
                    deleted.add(path)
                    changed.pop(path, None)
                else:
                    etag = xml.prop_text(entry, xml.GETETAG)
                    changed[path] = normalise_etag(etag) if etag else ""
                    deleted.discard(path)
            new_token = result.sync_token
            if not truncated or new_token is None:
                break
            current = new_token
            log.debug("%s: truncated reply, continuing with the new token", what)
        log.debug("%s: %d changed, %d deleted", calendar_url, len(changed), len(deleted))
        return Changes(new_token, changed, frozenset(deleted), not token)

    @staticmethod
    def _sync_error(reply: _Reply, what: str, token: str | None) -> UpstreamError:
        refused_token = b"valid-sync-token" in reply.body
        # iCloud answers a bare 403, CCS adds <valid-sync-token/>, others use 409, 400 or 412.
        if token and (refused_token or reply.status in (400, 403, 409, 410, 412)):
            return InvalidSyncToken(f"{what}: HTTP {reply.status} — the server refused the sync token", reply.status)
        return error_for_status(reply.status, what, reply.body)

    async def listing(self, calendar_url: str) -> dict[str, str]:
        """href path -> etag of every object (Depth-1 PROPFIND), the fallback when sync tokens fail."""
        reply = await self._propfind(calendar_url, xml.ETAG_BODY, 1)
        collection = urlsplit(calendar_url).path
        result: dict[str, str] = {}
        for entry in reply.multistatus(f"PROPFIND {calendar_url}").entries:
            path = self._path(calendar_url, entry.href)
            if _same_path(path, collection) or xml.COLLECTION in xml.child_tags(entry.props.get(xml.RESOURCETYPE)):
                continue
            etag = xml.prop_text(entry, xml.GETETAG)
            if etag:
                result[path] = normalise_etag(etag)
        return result

    # -- objects ------------------------------------------------------------------------------------

    async def fetch(self, calendar_url: str, hrefs: Iterable[str]) -> dict[str, RemoteObject]:
        """calendar-multiget in batches; objects the server reports missing (per-item 404) are left out.

        Keys are the hrefs as given when the server names them in another encoding; otherwise its paths.
        A batch whose answer is larger than ``max_response_bytes`` is asked for again in halves; an object
        too large on its own comes back empty, with ``problem`` saying so, so that the caller can skip it.
        """
        wanted = list(dict.fromkeys(self._path(calendar_url, href) for href in hrefs))
        by_decoded = {unquote(path): path for path in wanted}
        collection = urlsplit(calendar_url).path
        found: dict[str, RemoteObject] = {}
        # A stack, last batch first, so that objects come back in the order asked for.
        batches = [wanted[start : start + MULTIGET_BATCH] for start in range(0, len(wanted), MULTIGET_BATCH)][::-1]
        while batches:
            batch = batches.pop()
            what = f"REPORT calendar-multiget {calendar_url}"
            try:
                reply = await self._send(
                    "REPORT", calendar_url, xml.multiget_body(batch), {"Depth": "1", "Content-Type": XML_TYPE}
                )
            except ResponseTooLarge as error:
                if len(batch) > 1:
                    batches += [batch[len(batch) // 2 :], batch[: len(batch) // 2]]
                else:
                    log.warning("%s: %s is too large to read: %s", what, batch[0], error)
                    found[batch[0]] = RemoteObject(batch[0], "", "", problem=f"too large to read ({error})")
                continue
            if reply.status != 207:
                raise error_for_status(reply.status, what, reply.body)
            for entry in reply.multistatus(what).entries:
                path = self._path(calendar_url, entry.href)
                data = xml.calendar_data(entry)
                if _same_path(path, collection) or entry.status == 404 or data is None:
                    continue
                key = by_decoded.get(unquote(path), path)
                etag = xml.prop_text(entry, xml.GETETAG)
                found[key] = RemoteObject(key, normalise_etag(etag) if etag else "", data)
        log.debug("fetched %d of %d objects from %s", len(found), len(wanted), calendar_url)
        return found

    async def get(self, href: str) -> RemoteObject:
        url = self._url(href)
        reply = await self._send("GET", url)
        if reply.status != 200:
            raise error_for_status(reply.status, f"GET {url}", reply.body)
        etag = reply.headers.get("ETag") or await self._read_etag(url)
        return RemoteObject(self._path(url, url), normalise_etag(etag) if etag else "", reply.text)

    async def create(self, href: str, text: str) -> str:
        """PUT a new object (``If-None-Match: *``); returns its ETag."""
        url = self._url(href)
        reply = await self._put(url, text, {"If-None-Match": "*"})
        if reply.status not in (200, 201, 204):
            if reply.status in (403, 409) and b"no-uid-conflict" in reply.body:
                # RFC 4791's answer to a UID used by another object; iCloud says 412 for the same thing.
                raise PreconditionFailed(f"PUT {url}: HTTP {reply.status} — UID already in use", reply.status)
            raise error_for_status(reply.status, f"PUT {url}", reply.body)
        return await self._new_etag(url, reply)

    async def update(self, href: str, text: str, etag: str) -> str:
        """PUT over an existing object (``If-Match``); returns the new ETag."""
        url = self._url(href)
        reply = await self._put(url, text, {"If-Match": normalise_etag(etag)})
        if reply.status not in (200, 201, 204):
            raise await self._write_error(reply, "PUT", url)
        return await self._new_etag(url, reply)

    async def delete(self, href: str, etag: str | None) -> None:
        url = self._url(href)
        reply = await self._send("DELETE", url, "", {"If-Match": normalise_etag(etag)} if etag else None)
        if reply.status not in (200, 202, 204):
            raise await self._write_error(reply, "DELETE", url)

    async def _put(self, url: str, text: str, headers: dict[str, str]) -> _Reply:
        return await self._send("PUT", url, text, {"Content-Type": CALENDAR_TYPE, **headers})

    async def _new_etag(self, url: str, reply: _Reply) -> str:
        etag = reply.headers.get("ETag") or await self._read_etag(url)
        if not etag:
            raise UpstreamError(f"PUT {url}: the server gave no ETag, not even on PROPFIND")
        return normalise_etag(etag)

    async def _read_etag(self, url: str) -> str | None:
        reply = await self._propfind(url, xml.ETAG_BODY, 0)
        for entry in reply.multistatus(f"PROPFIND {url}").entries:
            if entry.status != 404 and (etag := xml.prop_text(entry, xml.GETETAG)):
                return etag
        return None

    async def _write_error(self, reply: _Reply, method: str, url: str) -> UpstreamError:
        """The error for a failed If-Match write; a 412 on a missing object becomes NotFound.

        RFC 9110 answers If-Match on a missing resource with 412 (Radicale does), iCloud with 404; the relay
        must know which, so a 412 is followed by one PROPFIND to see whether the object still exists.
        """
        what = f"{method} {url}"
        if reply.status == 412:
            try:
                await self._propfind(url, xml.ETAG_BODY, 0)
            except NotFound:
                return NotFound(f"{what}: HTTP 412 on an object that no longer exists", 404)
            return PreconditionFailed(f"{what}: HTTP 412 — the object changed (stale ETag)", 412)
        return error_for_status(reply.status, what, reply.body)
