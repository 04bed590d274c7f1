"""Stop the work of a request that nobody waits for any more: its client went away, or the server is stopping.

The CalDAV engine and the availability index do their work in worker threads, which cannot be interrupted
from outside. So every read request carries a :class:`StopSignal` in a context variable, which
``Engine.call`` copies into the worker thread together with the rest of the request's context. The places
that loop over an amount of work the client chooses call :func:`check` between two steps: the storage
plugin between two items it reads, the availability index between two items it parses, between two
buckets it expands and while it waits for another request's work on the same calendar, and the engine
before it starts a queued call. Once the signal is set, :func:`check` raises :class:`RequestStopped`; the
thread unwinds through its ``with`` blocks (storage locks, transactions) and its pool slot serves the next
request.

Only methods that change nothing are stopped (:data:`STOPPABLE_METHODS`): a write whose client went away
still runs to its end, so that what the store holds never depends on when a client hung up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum

from aiohttp import web

logger = logging.getLogger(__name__)

STOPPABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND", "REPORT"})
#: How often a busy request looks at its connection. aiohttp tells a handler nothing when its client goes
#: away (cancelling handlers would also cancel writes half-way), so the transport is looked at instead.
POLL_SECONDS = 0.2
#: Not sent to anyone (the client is gone), but recorded by the metrics and the traffic recorder, as nginx
#: does for "client closed request".
CLIENT_GONE_STATUS = 499

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StopReason(StrEnum):
    CLIENT_GONE = "the client went away"
    SHUTDOWN = "the server is shutting down"


class RequestStopped(BaseException):
    """Raised in a worker thread whose request was stopped.

    A ``BaseException``, like ``asyncio.CancelledError`` and for the same reason: on its way out it passes
    code that catches ``Exception`` to report a failure — Radicale's request handler (which would log a
    traceback and answer 500) and the index's "this item cannot be parsed" — and none of that applies.
    """

    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class StopSignal:
    """Set on the event loop, read by a worker thread (one attribute: assignment is atomic)."""

    def __init__(self) -> None:
        self.reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason


_current: ContextVar[StopSignal | None] = ContextVar("calrelay_stop_signal", default=None)


@contextmanager
def signalled_by(signal: StopSignal) -> Iterator[None]:
    """Inside, :func:`check` (also in threads that ``Engine.call`` starts) answers to ``signal``."""
    token = _current.set(signal)
    try:
        yield
    finally:
        _current.reset(token)


def check() -> None:
    """Raise :class:`RequestStopped` if the current request was stopped; nothing outside a request."""
    signal = _current.get()
    if signal is not None and signal.reason is not None:
        raise RequestStopped(signal.reason)


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _watch(request: web.Request, signal: StopSignal) -> None:
    while not client_gone(request):
        await asyncio.sleep(POLL_SECONDS)
    signal.stop(StopReason.CLIENT_GONE)


STOP_SIGNALS: web.AppKey[set[StopSignal]] = web.AppKey("stop_signals", set)


class ShutdownClock:
    """When the shutdown began, so that its cleanup waits for the engine only until ``[server]
    shutdown_timeout`` after it."""

    def __init__(self) -> None:
        self.started: float | None = None

    def time_left(self, timeout: float) -> float:
        """Seconds left of a shutdown that may take ``timeout`` in all (all of it if none began)."""
        return timeout if self.started is None else max(0.0, self.started + timeout - time.monotonic())


SHUTDOWN: web.AppKey[ShutdownClock] = web.AppKey("shutdown", ShutdownClock)


def setup(app: web.Application) -> None:
    """Stop read requests whose client went away, and every read request when the server shuts down (so that
    a shutdown does not wait for them). Call before adding middlewares that do work in the engine."""
    app[STOP_SIGNALS] = set()
    app[SHUTDOWN] = ShutdownClock()
    app.middlewares.append(_stopping_middleware)
    app.on_shutdown.append(_stop_all)


async def _stop_all(app: web.Application) -> None:
    app[SHUTDOWN].started = time.monotonic()
    signals = app[STOP_SIGNALS]
    if signals:
        logger.info("stopping %d busy read %s for the shutdown", len(signals),
                    "request" if len(signals) == 1 else "requests")
    for signal in signals:
        signal.stop(StopReason.SHUTDOWN)


@web.middleware
async def _stopping_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in STOPPABLE_METHODS:
        return await handler(request)
    signal = StopSignal()
    signals = request.app[STOP_SIGNALS]
    signals.add(signal)
    watcher = asyncio.create_task(_watch(request, signal), name="calrelay-client-watch")
    started = time.monotonic()
    try:
        with signalled_by(signal):
            return await handler(request)
    except RequestStopped as stopped:
        logger.info("stopped %s %s after %.1f s: %s", request.method, request.path, time.monotonic() - started,
                    stopped.reason.value)
        if stopped.reason is StopReason.SHUTDOWN:
            return web.Response(status=503, headers={"Retry-After": "5"},
                                text="The server is shutting down; retry in a few seconds.\n")
        return web.Response(status=CLIENT_GONE_STATUS, text="The client went away.\n")
    finally:
        watcher.cancel()
        signals.discard(signal)
