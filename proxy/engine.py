"""The CalDAV engine: an embedded Radicale, run in a bounded thread pool, and the bridge to it.

Radicale is a WSGI application with blocking file I/O and locks, so it never runs on the event loop: each
request is handed to a worker thread together with a request scope (``plugins.scope``) and the identity the
front door established. When Radicale returns, the changes its storage plugin recorded are published on the
:class:`ChangeBus`, outside the storage lock and without delaying the response.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import radicale
from aiohttp import web
from multidict import CIMultiDict
from radicale import config as radicale_config
from radicale import item as radicale_item
from radicale import pathutils

from plugins import scope as request_scope
from plugins.rights import Rights
from plugins.scope import Change
from plugins.sqlstore import Collection, Stamp, Storage, busy
from proxy import malloc, stopping
from proxy.auth import Users
from proxy.availability.index import IndexRead
from proxy.config import Settings
from proxy.outage import database_unavailable
from proxy.private import private_dir

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Hop-by-hop and length headers are recomputed by aiohttp.
_SKIPPED_RESPONSE_HEADERS = {"content-length", "connection", "transfer-encoding"}
_REASON_STATUSES = {400, 403, 409}


@dataclass(frozen=True)
class CalendarInfo:
    path: str  # "/alice/work/"
    props: Mapping[str, str]
    etag: str


@dataclass(frozen=True)
class StoredItem:
    href: str
    etag: str
    text: str


class ChangeBus:
    """Fans storage changes out to subscribers on the event loop. Thread-safe ``publish``."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: list[Callable[[Change], None]] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on ``loop`` from now on (the server's loop, known once it runs)."""
        self._loop = loop

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback(change)`` on the loop for every change; returns the unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def publish(self, change: Change) -> None:
        if self._loop is None:  # not serving (e.g. the CLI): nobody is listening
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, change)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            logger.debug("change after shutdown dropped: %s", change)

    def _deliver(self, change: Change) -> None:
        logger.debug("change: %s %s %s", change.action, change.path, change.href or "")
        for callback in list(self._subscribers):
            try:
                callback(change)
            except Exception:
                logger.exception("change subscriber %r failed on %s", callback, change)


def radicale_configuration(settings: Settings) -> radicale_config.Configuration:
    """Radicale's configuration for calrelay's engine, derived from calrelay's settings."""
    configuration = radicale_config.load()
    configuration.update(
        {
            "server": {
                # The front door enforces the request size; Radicale checks single resources.
                "max_content_length": str(settings.server.max_body_bytes),
                "max_resource_size": str(min(settings.storage.max_resource_size,
                                             int(settings.server.max_body_bytes * 0.8))),
                "max_vevent_rrule_occurrence": str(settings.storage.max_occurrences),
                "delay_on_error": "0",
            },
            # The front door authenticates; Radicale takes the user from REMOTE_USER.
            "auth": {"type": "remote_user", "delay": "0", "cache_logins": "False"},
            "rights": {"type": "plugins.rights", "permit_delete_collection": "True"},
            # The SQL storage (plugins/sqlstore); extra options of an external plugin are passed through.
            "storage": {"type": "plugins.sqlstore", "calrelay_database": settings.database_url},
            "web": {"type": "none"},
            # Radicale's own expansion (calendar-query with expand, its free-busy) stops at the same cap.
            "reporting": {
                "max_expand_occurrence": str(settings.limits.max_instances),
                "max_freebusy_occurrence": str(settings.limits.max_instances),
            },
            "logging": {"mask_passwords": "True"},
        },
        "calrelay",
        privileged=True,
    )
    return configuration


class Engine:
    """The embedded Radicale and its thread pool."""

    def __init__(self, settings: Settings, users: Users) -> None:
        # Made here so that Radicale does not warn about a missing storage folder on every first start.
        private_dir(settings.storage.data_dir)
        self.settings = settings
        self.users = users
        self.application = radicale.Application(radicale_configuration(settings))
        # Radicale builds its plugins itself; reach in once to wire them to each other and to the bus.
        storage = self.application._storage
        rights = self.application._rights
        assert isinstance(storage, Storage) and isinstance(rights, Rights)
        self.storage: Storage = storage
        storage.limits, storage.max_count = settings.limits, settings.storage.max_occurrences
        rights.mirror_role = storage.mirror_role
        rights.is_service = lambda name: (record := users.records().get(name)) is not None and record.is_service
        radicale_logger = logging.getLogger("radicale")
        if not any(isinstance(h, request_scope.WarningCollector) for h in radicale_logger.handlers):
            radicale_logger.addHandler(request_scope.WarningCollector())
        self._pool = ThreadPoolExecutor(settings.server.threads, thread_name_prefix="caldav")
        #: Calls started or queued and not yet done, so that a shutdown can wait for them with a deadline.
        self._busy: set[Future[Any]] = set()
        self._bus: ChangeBus | None = None
        #: Records each client request's changes as relay work (proxy.relay.outbox), before the response.
        self.outbox: Callable[[list[Change]], None] | None = None

    def attach(self, bus: ChangeBus) -> None:
        """Send every change, from client requests and from the relay, to ``bus``."""
        self._bus = bus
        self.storage.change_listener = bus.publish

    async def drain(self, timeout: float) -> int:
        """Wait at most ``timeout`` seconds for the calls in the pool to end; returns how many are still busy.

        A thread cannot be stopped from outside: a read past its last stop check, or a write, runs to its end.
        A shutdown must not wait for it beyond its deadline (``ThreadPoolExecutor.shutdown`` would), so the
        calls are awaited here, with a timeout."""
        busy = list(self._busy)
        if busy and timeout > 0:
            await asyncio.wait([asyncio.wrap_future(call) for call in busy], timeout=timeout)
        return sum(not call.done() for call in busy)

    def close(self) -> None:
        """Close the storage and let the pool's threads go without waiting for them (see :meth:`drain`)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.storage.close()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking function in the engine's pool, keeping the caller's context variables (among them
        the request's stop signal: a call whose request was stopped while it waited for a thread does not
        start)."""
        context = contextvars.copy_context()
        call = self._pool.submit(context.run, _unless_stopped, fn, *args)
        self._busy.add(call)
        call.add_done_callback(self._busy.discard)
        return await asyncio.wrap_future(call)

    # -- CalDAV requests ---------------------------------------------------------------------------------

    async def handle(self, request: web.Request, body: bytes, user: str) -> web.Response:
        """Answer a CalDAV request as ``user`` (the authenticated name, or "" for anonymous paths)."""
        environ = _environ(request, body, user)
        status, headers, payload, scope = await self.call(self._run_wsgi, environ)
        if status == 500 and database_unavailable(scope.failure):
            raise scope.failure  # an outage, not a bug: the front door answers 503 (proxy.outage)
        if self._bus is not None:
            for change in scope.changes:
                self._bus.publish(change)
        reason = scope.refusal or (scope.warnings[-1] if status == 400 and scope.warnings else None)
        if reason and status in _REASON_STATUSES:
            payload = f"{reason}\n".encode()
            headers = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-encoding")]
            headers.append(("Content-Type", "text/plain; charset=utf-8"))
        response = web.Response(status=status, body=payload)
        for key, value in headers:
            if key.lower() not in _SKIPPED_RESPONSE_HEADERS:
                response.headers.add(key, value)
        return response

    def _run_wsgi(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes, Any]:
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        with request_scope.request_scope() as scope:
            payload = b"".join(self.application(environ, start_response))
        malloc.after_answer(len(payload))  # what building a large answer took goes back to the system
        if self.outbox is not None and scope.changes:
            self.outbox(scope.changes)
        return int(captured["status"].split(" ", 1)[0]), captured["headers"], payload, scope

    # -- direct reads for the JSON API -------------------------------------------------------------------

    def ensure_principal(self, user: str) -> None:
        path = f"/{user}/"
        with self.storage.acquire_lock("w", user):
            if next(iter(self.storage.discover(path)), None) is None:
                self.storage.create_collection(path)

    def ensure_mirror(self, path: str, props: Mapping[str, str]) -> None:
        """Create the mirror collection at ``path`` with ``props``, or update the props of an existing one.

        Called by the relay and the link service, outside any client request, so the mirror properties
        that clients may not set are accepted here.
        """
        user = pathutils.strip_path(path).split("/", 1)[0]
        wanted = {"tag": "VCALENDAR", "C:supported-calendar-component-set": "VEVENT", **props}
        with self.storage.acquire_lock("w", user):
            collection = next(iter(self.storage.discover(path)), None)
            if collection is None:
                self.storage.create_collection(path, props=wanted)
            elif dict(collection.get_meta()) != wanted:
                collection.set_meta(wanted)

    def delete_collection(self, path: str) -> bool:
        user = pathutils.strip_path(path).split("/", 1)[0]
        with self.storage.acquire_lock("w", user):
            collection = next(iter(self.storage.discover(path)), None)
            if not isinstance(collection, radicale.storage.BaseCollection):
                return False
            collection.delete()
            return True

    def put_item(self, path: str, href: str, text: str) -> str:
        """Store ``text`` as ``href`` in the calendar at ``path`` (the relay's writes); returns the new ETag."""
        components = radicale_item.read_components(text)
        radicale_item.check_and_sanitize_items(
            components, is_collection=False, tag="VCALENDAR",
            max_vevent_rrule_occurrence=self.settings.storage.max_occurrences,
        )
        sane_path = pathutils.strip_path(path)
        item = radicale_item.Item(collection_path=sane_path, vobject_item=components[0])
        item.prepare()  # the storage plugin's upload validates it as it does a client's PUT
        with self.storage.acquire_lock("w", sane_path.split("/", 1)[0]):
            collection = next(iter(self.storage.discover(path)), None)
            if not isinstance(collection, radicale.storage.BaseCollection):
                raise LookupError(f"no calendar at {path}")
            stored, _ = collection.upload(href, item)
            return stored.etag

    def put_items(self, path: str, items: list[tuple[str, str]]) -> list[str]:
        """Store several ``(href, text)`` in the calendar at ``path`` under one lock (the relay's batched mirror
        writes: the lock is one database transaction, so the batch commits at once). Returns the ETags."""
        sane_path = pathutils.strip_path(path)
        prepared = []
        for href, text in items:
            components = radicale_item.read_components(text)
            radicale_item.check_and_sanitize_items(
                components, is_collection=False, tag="VCALENDAR",
                max_vevent_rrule_occurrence=self.settings.storage.max_occurrences,
            )
            item = radicale_item.Item(collection_path=sane_path, vobject_item=components[0])
            item.prepare()
            prepared.append((href, item))
        with self.storage.acquire_lock("w", sane_path.split("/", 1)[0]):
            collection = next(iter(self.storage.discover(path)), None)
            if not isinstance(collection, Collection):
                raise LookupError(f"no calendar at {path}")
            return collection.upload_many(prepared)

    def delete_item(self, path: str, href: str) -> bool:
        sane_path = pathutils.strip_path(path)
        with self.storage.acquire_lock("w", sane_path.split("/", 1)[0]):
            collection = next(iter(self.storage.discover(path)), None)
            if not isinstance(collection, radicale.storage.BaseCollection):
                return False
            try:
                collection.delete(href)
            except radicale.storage.ComponentNotFoundError:
                return False
            return True

    def list_calendars(self, user: str) -> list[CalendarInfo]:
        """The user's calendar collections (booking calendars and mirrors) with their props and ETags."""
        if not pathutils.is_safe_path_component(user):
            return []
        calendars = []
        with self.storage.acquire_lock("r", user):
            for collection in self.storage.discover(f"/{user}/", depth="1"):
                if isinstance(collection, radicale.storage.BaseCollection) and collection.tag == "VCALENDAR":
                    path = pathutils.unstrip_path(collection.path, True)
                    calendars.append(CalendarInfo(path, dict(collection.get_meta()), collection.etag))
        return calendars

    def read_instances(self, paths: Sequence[str], start: int, end: int) -> IndexRead:
        """What availability reads of the calendars at ``paths`` over [start, end) (epoch seconds), in one
        read transaction: the instance index's candidate rows and the events it does not list there."""
        with self.storage.acquire_lock("r"), self.storage.transaction("r") as connection:
            return IndexRead(busy.candidates(connection, paths, start, end),
                             busy.unindexed(connection, paths, start, end))

    def read_changed_items(
        self, path: str, known: Mapping[str, Stamp]
    ) -> tuple[dict[str, Stamp], list[StoredItem]]:
        """The calendar's current item stamps, and the items whose stamp differs from ``known`` (new or
        changed). Deleted items are those of ``known`` missing from the stamps. Lets the relay re-read only
        what changed instead of the whole calendar on every pass."""
        user = pathutils.strip_path(path).split("/", 1)[0]
        with self.storage.acquire_lock("r", user):
            collection = next(iter(self.storage.discover(path)), None)
            if not isinstance(collection, Collection):
                return {}, []
            stamps = collection.stamps()
            changed = [href for href, stamp in stamps.items() if known.get(href) != stamp]
            items = [
                StoredItem(href, item.etag, item.serialize())
                for href, item in collection.get_multi(changed)
                if item is not None
            ]
        return stamps, items

    def read_item(self, path: str, href: str) -> StoredItem | None:
        user = pathutils.strip_path(path).split("/", 1)[0]
        with self.storage.acquire_lock("r", user):
            collection = next(iter(self.storage.discover(path)), None)
            if not isinstance(collection, radicale.storage.BaseCollection):
                return None
            item = next(iter(collection.get_multi([href])), (href, None))[1]
            return StoredItem(href, item.etag, item.serialize()) if item is not None else None

    def read_items(self, path: str) -> list[StoredItem]:
        """Every object of the calendar at ``path`` (empty if there is none)."""
        user = pathutils.strip_path(path).split("/", 1)[0]
        with self.storage.acquire_lock("r", user):
            collection = next(iter(self.storage.discover(path)), None)
            if not isinstance(collection, radicale.storage.BaseCollection):
                return []
            return [StoredItem(item.href or "", item.etag, item.serialize()) for item in collection.get_all()]


def _unless_stopped(fn: Callable[..., T], *args: Any) -> T:
    stopping.check()
    return fn(*args)


def _environ(request: web.Request, body: bytes, user: str) -> dict[str, Any]:
    host = request.host or "localhost"
    server_name, _, server_port = host.rpartition(":") if ":" in host else (host, "", "")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": request.path,
        "QUERY_STRING": request.query_string,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "SERVER_NAME": server_name or host,
        "SERVER_PORT": server_port or ("443" if request.secure else "80"),
        "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
        "REMOTE_ADDR": request.remote or "",
        "REMOTE_USER": user,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": _LogStream(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    headers: CIMultiDict[str] = CIMultiDict(request.headers)
    for name in ("Authorization", "Cookie", "Content-Type", "Content-Length"):
        headers.popall(name, None)
    for name in headers:
        environ["HTTP_" + name.upper().replace("-", "_")] = ", ".join(headers.getall(name))
    return environ


class _LogStream(io.TextIOBase):
    """``wsgi.errors`` that forwards to logging instead of stderr."""

    def write(self, text: str) -> int:
        if text.strip():
            logger.warning("radicale: %s", text.rstrip())
        return len(text)
