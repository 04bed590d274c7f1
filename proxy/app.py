"""The application factory: calrelay's front door.

Middlewares, outermost first: the traffic recorder (HAR, when switched on), limits (bad paths, oversized
bodies, hostile XML), authentication (one source for every endpoint), and the free-busy REPORT answered from
the availability engine. Routes: ``/health``, the JSON API under ``/api/v1/``, and everything else to the
CalDAV engine (Radicale), which serves discovery, collections, objects and REPORTs.

Background work lives in ``cleanup_ctx`` entries: the engine and the change bus, the embedded iCloud
emulator (when it is the default upstream), and the relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from proxy import __version__
from proxy.auth import PRINCIPAL_REQUEST_KEY, Authenticator, UsersFile, make_auth_middleware
from proxy.availability.routes import FRESHNESS, USER_ADDRESSES
from proxy.availability.routes import setup_routes as setup_availability
from proxy.config import Settings
from proxy.emulator import EmulatorServer, load_accounts
from proxy.engine import ChangeBus, Engine
from proxy.keys import AUTHENTICATOR, CHANGES, EMULATOR, ENGINE, RELAY, SETTINGS, STATE
from proxy.limits import make_limits_middleware
from proxy.links.api import LINKS
from proxy.links.api import setup_routes as setup_link_routes
from proxy.links.service import LinkService
from proxy.recorder import recorder_middleware, setup_recorder
from proxy.relay.supervisor import Relay
from proxy.relay.worker import RelayContext
from proxy.secretbox import SecretBox
from proxy.state import AsyncState
from proxy.upstream import UpstreamClient

logger = logging.getLogger(__name__)

#: Paths the CalDAV engine answers without credentials (a redirect that reveals nothing).
ANONYMOUS_CALDAV_PATHS = frozenset({"/.well-known/caldav", "/.well-known/caldav/"})


def make_app(settings: Settings) -> web.Application:
    users = UsersFile(settings.users_file)
    engine = Engine(settings, users)
    authenticator = Authenticator(users, settings.auth)
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        # After refusing an oversized body, read what is still in flight for at most a second (not
        # aiohttp's default ten), so a refused upload does not hold the connection or a shutdown.
        handler_args={"lingering_time": 1.0},
        middlewares=[
            recorder_middleware,  # outermost, so that refusals (401, 413) are recorded too
            make_limits_middleware(settings.server.max_body_bytes, settings.limits),
            make_auth_middleware(authenticator, engine.call, public_paths=ANONYMOUS_CALDAV_PATHS),
        ],
    )
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[AUTHENTICATOR] = authenticator
    app[CHANGES] = ChangeBus()
    app[STATE] = AsyncState(settings.storage.data_dir / "state.sqlite3")
    box = SecretBox.for_data_dir(settings.storage.data_dir)
    app[RELAY] = Relay(RelayContext(settings, engine, app[STATE], box, UpstreamClient))
    app[FRESHNESS] = app[RELAY].freshness
    app[USER_ADDRESSES] = app[RELAY].addresses
    if settings.uses_emulator:
        app[EMULATOR] = _emulator(settings)
    app[LINKS] = LinkService(
        settings, engine, app[STATE], box, on_change=app[RELAY].link_changed,
        default_server_url=lambda: app[EMULATOR].discovery_url if EMULATOR in app else settings.default_server_url,
    )
    app.cleanup_ctx.append(_engine_lifecycle)
    if settings.uses_emulator:
        app.cleanup_ctx.append(_emulator_lifecycle)
    app.cleanup_ctx.append(_relay_lifecycle)

    app.router.add_get("/health", health)
    setup_recorder(app, settings.recorder.path)
    setup_link_routes(app)
    setup_availability(app)
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
    yield
    app[STATE].close()
    engine.close()


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
    await emulator.start()
    logger.info("built-in iCloud emulator at %s (account demo@icloud.test unless configured)", emulator.discovery_url)
    yield
    await emulator.stop()


async def _relay_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """The relay runs after the engine and the emulator are up, and stops before they go."""
    relay = app[RELAY]
    unsubscribe = app[CHANGES].subscribe(relay.on_change)
    await relay.start()
    yield
    unsubscribe()
    await relay.stop()


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def caldav(request: web.Request) -> web.StreamResponse:
    principal = request.get(PRINCIPAL_REQUEST_KEY)
    body = await request.read()
    return await request.app[ENGINE].handle(request, body, principal.name if principal else "")
