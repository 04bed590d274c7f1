"""The application factory: calrelay's front door.

Middlewares, outermost first: the traffic recorder (HAR, when switched on), limits (bad paths, oversized
bodies, hostile XML), authentication (one source for every endpoint), stopping read requests whose client
went away (:mod:`proxy.stopping`), and the free-busy REPORT answered from the availability engine. Routes:
``/health``, the JSON API under ``/api/v1/``, and everything else to the CalDAV engine (Radicale), which
serves discovery, collections, objects and REPORTs.

Background work lives in ``cleanup_ctx`` entries: the engine and the change bus, the embedded iCloud
emulator (when it is the default upstream), and the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from proxy import __version__, presence, stopping
from proxy.audit import AuditLog
from proxy.auth import PRINCIPAL_REQUEST_KEY, Authenticator, make_auth_middleware
from proxy.availability.routes import FRESHNESS, USER_ADDRESSES
from proxy.availability.routes import setup_routes as setup_availability
from proxy.cluster.users_db import open_users
from proxy.config import ConfigError, Settings
from proxy.emulator import EmulatorServer, load_accounts
from proxy.engine import ChangeBus, Engine
from proxy.feeds import FEEDS_PREFIX, FeedStore
from proxy.feeds import setup_routes as setup_feeds
from proxy.interop.middleware import setup_interop
from proxy.key_check import open_secret_box
from proxy.keys import AUTHENTICATOR, CHANGES, EMULATOR, ENGINE, RELAY, SETTINGS, STATE
from proxy.limits import make_limits_middleware
from proxy.links.api import LINKS
from proxy.links.api import setup_routes as setup_link_routes
from proxy.links.service import LinkService
from proxy.metrics import METRICS_PATH, Metrics, make_metrics_middleware
from proxy.operations import AUDIT, METRICS
from proxy.operations import setup_routes as setup_operations
from proxy.outage import database_unavailable, outage_middleware
from proxy.recorder import recorder_middleware, setup_recorder
from proxy.relay.outbox import OutboxWriter
from proxy.relay.supervisor import Relay
from proxy.relay.worker import RelayContext
from proxy.state import AsyncState
from proxy.status import STATUS_PATH, wants_html
from proxy.status import setup_routes as setup_status
from proxy.upstream import UpstreamClient
from proxy.upstream.discovery import DiscoveryCache
from proxy.user_settings import UserSettings
from proxy.user_settings import setup_routes as setup_user_settings

logger = logging.getLogger(__name__)

#: Paths the CalDAV engine answers without credentials (a redirect that reveals nothing).
ANONYMOUS_CALDAV_PATHS = frozenset({"/.well-known/caldav", "/.well-known/caldav/"})
#: Paths that check credentials of their own (a bearer token for Prometheus).
SELF_AUTHENTICATED_PATHS = frozenset({METRICS_PATH})


def make_app(settings: Settings) -> web.Application:
    state = AsyncState(settings.database_url)
    users = open_users(settings, state.db.engine)  # in the database every instance shares
    engine = Engine(settings, users)
    authenticator = Authenticator(users, settings.auth)
    metrics = Metrics()
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        # After refusing an oversized body, read what is still in flight for at most a second (not
        # aiohttp's default ten), so a refused upload does not hold the connection or a shutdown.
        handler_args={"lingering_time": 1.0},
        middlewares=[
            recorder_middleware,  # outermost, so that refusals (401, 413) are recorded too
            outage_middleware,  # a database outage is a 503 with Retry-After, wherever it surfaces
            make_metrics_middleware(metrics),  # counts refusals too
            make_limits_middleware(settings.server.max_body_bytes, settings.limits),
            make_auth_middleware(
                authenticator, engine.call, public_paths=ANONYMOUS_CALDAV_PATHS | SELF_AUTHENTICATED_PATHS,
                public_prefixes=(FEEDS_PREFIX,),  # the token in a feed's URL is its credential
            ),
        ],
    )
    stopping.setup(app)  # inside authentication, outside every middleware that works in the engine
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[AUTHENTICATOR] = authenticator
    app[CHANGES] = ChangeBus()
    app[STATE] = state
    engine.outbox = OutboxWriter(app[STATE].db.engine)
    # Before anything starts: an instance whose key cannot read the database's secrets stops here (one line).
    box = open_secret_box(settings, state.db.engine)
    app[METRICS] = metrics
    database = app[STATE].db.engine  # one engine, one connection pool for the whole process
    app[AUDIT] = AuditLog(database, settings.audit.retention_days, on_record=metrics.decision)
    client_factory = functools.partial(UpstreamClient, observer=metrics.upstream_request,
                                       max_response_bytes=settings.upstream.max_response_bytes)
    discovery = DiscoveryCache(settings.upstream.discovery_ttl)  # one per process: the relay and linking share it
    app[RELAY] = Relay(RelayContext(settings, engine, app[STATE], box, client_factory, app[AUDIT], metrics,
                                    discovery=discovery))
    app[FRESHNESS] = app[RELAY].freshness
    app[USER_ADDRESSES] = app[RELAY].addresses
    if settings.uses_emulator:
        app[EMULATOR] = _emulator(settings)
    app[LINKS] = LinkService(
        settings, engine, app[STATE], box, on_change=app[RELAY].link_changed,
        default_server_url=lambda: app[EMULATOR].discovery_url if EMULATOR in app else settings.default_server_url,
        discovery=discovery,
    )
    app.cleanup_ctx.append(_engine_lifecycle)
    if settings.uses_emulator:
        app.cleanup_ctx.append(_emulator_lifecycle)

    app.router.add_get("/health", health)
    setup_recorder(app, settings.recorder.path, folder=settings.recordings_folder)
    setup_link_routes(app)
    setup_availability(app)
    setup_interop(app)  # after the free-busy middleware: REPORTs calrelay answers itself
    setup_operations(app)  # its audit trail outlives the relay, which records into it until it stops
    app.cleanup_ctx.append(_relay_lifecycle)
    setup_status(app)
    setup_feeds(app, FeedStore(database))
    setup_user_settings(app, UserSettings(database))
    app.router.add_get("/", root)
    # The catch-all goes last so that every more specific route above wins.
    app.router.add_route("*", "/{path:.*}", caldav)
    return app


async def _engine_lifecycle(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    app[CHANGES].bind(asyncio.get_running_loop())
    engine.attach(app[CHANGES])
    users = await engine.call(app[AUTHENTICATOR].users.records)
    for name in users:
        await engine.call(engine.ensure_principal, name)
    if not users:
        logger.warning(
            "no users yet: add one with `calrelay users add NAME --password-stdin --data %s`",
            app[SETTINGS].storage.data_dir,
        )
    extender = asyncio.create_task(_extend_instance_index(engine))
    yield
    extender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await extender
    still_busy = await engine.drain(app[stopping.SHUTDOWN].time_left(app[SETTINGS].server.shutdown_timeout))
    if still_busy:
        logger.warning("%d engine %s still busy at the end of the shutdown time ([server] shutdown_timeout); "
                       "not waiting for %s", still_busy, "call" if still_busy == 1 else "calls",
                       "it" if still_busy == 1 else "them")
    app[STATE].close()
    engine.close()


#: How often the instance index is extended as time passes (plugins.sqlstore.horizon); also once at start.
INDEX_EXTENSION_INTERVAL = 6 * 3600.0


async def _extend_instance_index(engine: Engine) -> None:
    while True:
        try:
            await engine.call(engine.storage.extend_index)
        except Exception:  # the database is away, say: the next round catches up
            logger.exception("extending the instance index failed")
        await asyncio.sleep(INDEX_EXTENSION_INTERVAL)


def _emulator(settings: Settings) -> EmulatorServer:
    """The built-in iCloud emulator, the default upstream, so that a fresh machine runs everything offline."""
    accounts = load_accounts(settings.emulator.accounts_file) if settings.emulator.accounts_file else None
    return EmulatorServer(
        host=settings.emulator.host,
        port=settings.emulator.port,
        partition_port=settings.emulator.partition_port,
        accounts=accounts,
        data_dir=settings.storage.data_dir / "emulator",
    )


async def _emulator_lifecycle(app: web.Application) -> AsyncIterator[None]:
    emulator = app[EMULATOR]
    try:
        await emulator.start()
    except OSError as error:
        await emulator.stop()
        if error.errno != errno.EADDRINUSE:
            raise
        settings = app[SETTINGS].emulator
        raise ConfigError(
            f"the built-in iCloud emulator cannot listen on {settings.host} port {settings.port} or "
            f"{settings.partition_port}, one is in use (another calrelay?): choose others with --emulator-port "
            "and --emulator-partition-port or [emulator] port and partition_port (0 picks free ports)"
        ) from None
    logger.info("built-in iCloud emulator at %s (account demo@icloud.test unless configured)", emulator.discovery_url)
    yield
    await emulator.stop()


async def _relay_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """The relay runs after the engine and the emulator are up, and stops before they go."""
    relay = app[RELAY]
    unsubscribe = app[CHANGES].subscribe(relay.on_change)
    await relay.start()
    async with presence.announced(app[SETTINGS].storage.data_dir):  # `calrelay sync --now` looks for this
        yield
    unsubscribe()
    await relay.stop()
    state = app[STATE]
    try:
        pending = sum(
            [len(await state.call(state.db.pending, link.user)) for link in await state.call(state.db.links)]
        )
    except Exception as error:
        if not database_unavailable(error):
            raise
        logger.warning("relay stopped; the database is unavailable, so pending work is retried at the next start")
        return
    if pending:
        logger.warning("relay stopped with %d pending %s not yet in iCloud; retried at the next start", pending,
                       "item" if pending == 1 else "items")
    else:
        logger.info("relay stopped; nothing pending for iCloud")


async def health(request: web.Request) -> web.Response:
    """Liveness for a load balancer: this instance, its database connection, and the leases it holds.

    503 when the database does not answer: an instance without its database can serve nothing that matters."""
    state, relay = request.app[STATE], request.app[RELAY]
    try:
        await state.call(state.db.ping)
        database = "ok"
    except Exception as error:
        if not database_unavailable(error):
            raise
        database = "unavailable"
    return web.json_response(
        {"status": "ok" if database == "ok" else "degraded", "version": __version__, "instance": relay.instance_id,
         "database": database, "leases": relay.leases_held},
        status=200 if database == "ok" else 503,
    )


async def root(request: web.Request) -> web.StreamResponse:
    """A browser at ``/`` gets the status page; CalDAV clients get what the CalDAV engine answers."""
    if wants_html(request):
        raise web.HTTPFound(STATUS_PATH)
    return await caldav(request)


async def caldav(request: web.Request) -> web.StreamResponse:
    principal = request.get(PRINCIPAL_REQUEST_KEY)
    body = await request.read()
    return await request.app[ENGINE].handle(request, body, principal.name if principal else "")
