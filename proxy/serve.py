"""``calrelay serve``: run the CalDAV server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import threading
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from proxy import database, schema
from proxy.app import make_app
from proxy.logs import use_json
from proxy.settings_cli import settings_from_args
from proxy.tls import server_context

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "serve", parents=[common], help="run the CalDAV server", description=run.__doc__
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 5232)")
    parser.add_argument("--record", metavar="FILE", help="record every exchange to this HAR file (secrets redacted)")
    parser.add_argument("--emulator-port", type=int, metavar="PORT",
                        help="discovery port of the built-in iCloud emulator (default 8443; 0 picks a free port)")
    parser.add_argument("--emulator-partition-port", type=int, metavar="PORT",
                        help="partition port of the built-in iCloud emulator (default 8444; 0 picks a free port)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve CalDAV on [server] host:port with the embedded engine; stop gracefully on SIGINT/SIGTERM."""
    settings = settings_from_args(args, host=args.host, port=args.port)
    use_json(settings.logging.json)
    if args.record:
        settings = settings.replace("recorder", path=Path(args.record).resolve())
    emulator_ports = {"port": args.emulator_port, "partition_port": args.emulator_partition_port}
    if any(value is not None for value in emulator_ports.values()):
        settings = settings.replace("emulator", **{k: v for k, v in emulator_ports.items() if v is not None})
    engine = database.create_engine(settings.database_url)
    try:
        schema.check(engine)  # a newer or older schema: refuse before touching anything
    except schema.SchemaError as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    tls = server_context(settings)  # before anything starts, so a bad certificate stops calrelay at once
    app = make_app(settings)
    app.on_shutdown.insert(0, _exit_by_deadline(settings.server.shutdown_timeout))
    logger.info("data directory: %s", settings.storage.data_dir)
    try:
        web.run_app(
            app,
            host=settings.server.host,
            port=settings.server.port,
            shutdown_timeout=settings.server.shutdown_timeout,
            ssl_context=tls,
            print=lambda message: logger.info("%s", message),
        )
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        print(f"calrelay: {settings.server.host}:{settings.server.port} is already in use (another calrelay?): "
              "choose another with --port or [server] port (0 picks a free port)", file=sys.stderr)
        return 2
    logger.info("calrelay stopped")
    _exit_now(0)


def _exit_now(status: int) -> typing.NoReturn:
    """End the process without the interpreter's teardown.

    Everything calrelay keeps is closed by now (database pools, the relay, the presence file). What is left
    is memory: the teardown would free every object one by one — seconds for the availability index of a
    busy server, 10 s after a year of dense free-busy REPORTs — and join the engine's worker threads, one of
    which may still be busy with work nobody waits for."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _exit_by_deadline(timeout: float) -> Callable[[web.Application], Awaitable[None]]:
    """An ``on_shutdown`` hook that ends the process ``timeout`` seconds after the shutdown began, whatever
    is still running then: the shutdown's promise (``[server] shutdown_timeout``) holds even if a write, the
    relay or a database call takes longer than it. A write cut short is a transaction never committed."""

    def late() -> None:
        logger.error("the shutdown took longer than [server] shutdown_timeout (%.1f s); exiting now", timeout)
        _exit_now(1)

    async def arm(app: web.Application) -> None:
        timer = threading.Timer(timeout, late)
        timer.daemon = True
        timer.start()

    return arm
