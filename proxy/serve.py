"""``calrelay serve``: run the CalDAV server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from proxy import database, schema
from proxy.app import make_app
from proxy.settings_cli import settings_from_args

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "serve", parents=[common], help="run the CalDAV server", description=run.__doc__
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 5232)")
    parser.add_argument("--record", metavar="FILE", help="record every exchange to this HAR file (secrets redacted)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve CalDAV on [server] host:port with the embedded engine; stop gracefully on SIGINT/SIGTERM."""
    settings = settings_from_args(args, host=args.host, port=args.port)
    if args.record:
        settings = settings.replace("recorder", path=Path(args.record).resolve())
    engine = database.create_engine(settings.database_url)
    try:
        schema.check(engine)  # a newer or older schema: refuse before touching anything
    except schema.SchemaError as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    app = make_app(settings)
    logger.info("data directory: %s", settings.storage.data_dir)
    web.run_app(
        app,
        host=settings.server.host,
        port=settings.server.port,
        shutdown_timeout=settings.server.shutdown_timeout,
        print=lambda message: logger.info("%s", message),
    )
    return 0
