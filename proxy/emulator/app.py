"""The aiohttp applications (one per port) and :class:`EmulatorServer`, the in-process runner.

iCloud splits discovery (``caldav.icloud.com``) from the calendar home (``pNN-caldav.icloud.com:443``); the
emulator listens on two ports to reproduce the split. Calendar homes ``/<DSID>/calendars/…`` answer on the
partition port only (404 on the discovery port; ``home_on_partition_only`` off serves them on both, redirect
mode redirects there); only the discovery port serves the control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from proxy.emulator import control, handlers, reports
from proxy.emulator.accounts import Account, default_accounts
from proxy.emulator.context import EMULATOR, ROLE, Emulator, EmulatorOptions, Role
from proxy.emulator.faults import FaultSettings
from proxy.emulator.mail import Invitation
from proxy.emulator.resources import NotFound, resolve
from proxy.emulator.responses import (
    RequestContext,
    authenticate,
    basic_credentials,
    html_error,
    unauthorized,
)
from proxy.emulator.store import Store

log = logging.getLogger(__name__)

#: Seconds between writes of a changed state to --data (a write per change would make bulk loads quadratic).
FLUSH_INTERVAL = 0.25

Handler = Callable[[RequestContext], Awaitable[web.StreamResponse]]
METHODS: dict[str, Handler] = {
    "PROPFIND": handlers.propfind,
    "PROPPATCH": handlers.proppatch,
    "MKCALENDAR": handlers.mkcalendar,
    "MKCOL": handlers.mkcol,
    "OPTIONS": handlers.options,
    "GET": handlers.get,
    "HEAD": handlers.get,
    "PUT": handlers.put,
    "DELETE": handlers.delete,
    "REPORT": reports.report,
}
HOME_PATH = re.compile(r"^/\d+/calendars(/|$)")


def _partition_of(request: web.Request, emulator: Emulator) -> int:
    credentials = basic_credentials(request)
    state = emulator.store.by_apple_id(credentials[0]) if credentials else None
    if state is None:
        state = next(iter(emulator.store.accounts.values()), None)
    return state.account.partition if state else 1


async def _apple_headers(request: web.Request, response: web.StreamResponse) -> None:
    emulator = request.app[EMULATOR]
    partition = _partition_of(request, emulator)
    response.headers["Server"] = f"AppleHttpServer/{emulator.server_build[:12]}"
    response.headers["X-Apple-Request-UUID"] = str(uuid.uuid4())
    response.headers["x-apple-user-partition"] = str(partition)
    response.headers["X-Responding-Instance"] = (
        f"caldavj:1:p{partition}-caldavj-emulator:8001:{request.app[ROLE]}"
    )


@web.middleware
async def inject_faults(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith(control.PREFIX + "/"):
        return await handler(request)
    emulator = request.app[EMULATOR]
    settings = emulator.faults.settings
    if settings.latency_ms:
        await asyncio.sleep(settings.latency_ms / 1000)
    credentials = basic_credentials(request)
    refusal = emulator.faults.check(credentials[0].lower() if credentials else None)
    emulator.requests[refusal.kind if refusal else "served"] += 1
    emulator.request_log.append((request.method, request.path, request.host))
    if refusal is not None and refusal.kind == "throttle":
        emulator.throttled_at.append(time.monotonic())
    if refusal is None:
        return await handler(request)
    if refusal.kind == "drop":
        log.info("fault: dropping the connection for %s %s", request.method, request.path)
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
    response = html_error(emulator, refusal.status)
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(refusal.retry_after)
    log.info("fault: %s %s answered %s", request.method, request.path, refusal.status)
    return response


async def dispatch(request: web.Request) -> web.StreamResponse:
    emulator = request.app[EMULATOR]
    options = emulator.options
    if request.raw_path.startswith("//"):
        return html_error(emulator, 400)
    if (
        request.host.rsplit(":", 1)[0] if ":" in request.host else request.host
    ).lower() in options.apex_hosts:
        return html_error(emulator, 501)
    path = request.path
    if path.rstrip("/") == "/.well-known/caldav" and options.well_known == "redirect":
        raise web.HTTPMovedPermanently("/")
    if request.app[ROLE] == "discovery" and HOME_PATH.match(path):
        if options.home_redirect:
            location = emulator.partition_url.rstrip("/") + request.raw_path
            raise (web.HTTPMovedPermanently if options.home_redirect == 301 else web.HTTPFound)(location)
        if options.home_on_partition_only:
            return html_error(emulator, 404)
    state = authenticate(request, emulator)
    if state is None:
        return unauthorized()
    if emulator.faults.settings.etag_churn:
        emulator.store.churn_etags(state)
    try:
        target = resolve(emulator, path)
    except NotFound:
        return html_error(emulator, 404)
    if target.dsid is not None and target.dsid != state.account.dsid:
        # Another account's (or a made-up) DSID: iCloud answers 403, never revealing whether it exists.
        return html_error(emulator, 403)
    handler = METHODS.get(request.method)
    if handler is None:
        return html_error(emulator, 405)
    return await handler(RequestContext(request, emulator, state, target))


def make_emulator_app(emulator: Emulator, role: Role = "discovery") -> web.Application:
    """The application for one port; ``role`` is ``discovery`` (with the control API) or ``partition``."""
    middlewares = [control.loopback_only, inject_faults] if role == "discovery" else [inject_faults]
    # iCloud accepts bodies of a few MB; keep aiohttp's limit out of the way of large calendars.
    app = web.Application(middlewares=middlewares, client_max_size=16 * 1024 * 1024)
    app[EMULATOR] = emulator
    app[ROLE] = role
    app.on_response_prepare.append(_apple_headers)
    if role == "discovery":
        control.add_routes(app)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class EmulatorServer:
    """Runs the emulator in the current event loop on two ports.

    >>> async with EmulatorServer() as emu:
    ...     emu.discovery_url, emu.partition_url
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        partition_port: int = 0,
        *,
        partition_host: str | None = None,
        accounts: list[Account] | None = None,
        data_dir: str | Path | None = None,
        options: EmulatorOptions | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.partition_port = partition_port
        # iCloud's partition is another *host name*; python-caldav only moves to the home-set host when
        # the name differs, so on loopback the home is advertised as "localhost".
        self.partition_host = partition_host or ("localhost" if host == "127.0.0.1" else host)
        self.emulator = Emulator(
            Store(accounts if accounts is not None else default_accounts(), data_dir),
            options or EmulatorOptions(),
        )
        self._runners: list[web.AppRunner] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def discovery_url(self) -> str:
        return self.emulator.discovery_url

    @property
    def partition_url(self) -> str:
        return self.emulator.partition_url

    @property
    def options(self) -> EmulatorOptions:
        return self.emulator.options

    @property
    def accounts(self) -> list[Account]:
        return [state.account for state in self.emulator.store.accounts.values()]

    async def _serve(self, role: Role, port: int) -> int:
        runner = web.AppRunner(make_emulator_app(self.emulator, role), access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, self.host, port).start()
        bound = int(runner.addresses[0][1])
        if role == "partition" and self.partition_host == "localhost" and self.host == "127.0.0.1":
            # "localhost" may resolve to ::1 first; answer there too, on the same port, where IPv6 exists.
            try:
                await web.TCPSite(runner, "::1", bound).start()
            except OSError as error:
                log.debug("partition host not on ::1: %s", error)
        return bound

    async def start(self) -> EmulatorServer:
        discovery_port = await self._serve("discovery", self.port)
        partition_port = await self._serve("partition", self.partition_port)
        self.emulator.discovery_url = f"http://{_url_host(self.host)}:{discovery_port}/"
        self.emulator.partition_url = f"http://{_url_host(self.partition_host)}:{partition_port}/"
        log.info("iCloud emulator: discovery %s, partition %s", self.discovery_url, self.partition_url)
        self._flusher = asyncio.create_task(self._flush_regularly(), name="emulator-flush")
        return self

    async def _flush_regularly(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.emulator.store.flush()

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        self.emulator.store.flush()

    async def __aenter__(self) -> EmulatorServer:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    # -- in-process shortcuts for what the control API does over HTTP ----------------------------------

    def set_faults(self, **changes: Any) -> FaultSettings:
        return self.emulator.faults.update(changes)

    def clear_faults(self) -> FaultSettings:
        return self.emulator.faults.reset()

    def mail(self) -> list[Invitation]:
        return self.emulator.mail.entries()

    async def control(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """Call the control API over HTTP, e.g. ``await emu.control("POST", "faults", {"error_rate": 1})``."""
        url = f"{self.discovery_url}_emulator/{path.lstrip('/')}"
        async with aiohttp.ClientSession() as session, session.request(method, url, json=payload) as reply:
            result = await reply.json()
            if reply.status >= 400:
                raise ValueError(f"control API {method} {path}: {reply.status} {result}")
            return result
