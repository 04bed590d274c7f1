"""``calrelay feeds USER [--create CALENDAR | --revoke ID]``: a calendar's private .ics subscription URLs.

Works on the data directory directly (like ``calrelay link``), so it can run beside the server.
"""

from __future__ import annotations

import argparse
import sys

from proxy.cluster.users_db import open_users
from proxy.database import create_engine
from proxy.engine import Engine
from proxy.feeds import FEEDS_PREFIX, FeedError, FeedStore, calendar_path
from proxy.settings_cli import settings_from_args


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "feeds", parents=[common], help="a calendar's private .ics subscription URLs (list, create, revoke)",
        description="List USER's subscription feeds, --create one for a calendar (its URL, which needs no "
        "password, is printed once), or --revoke one by its id.",
    )
    parser.add_argument("user")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--create", metavar="CALENDAR", help="make a feed of this calendar (e.g. sales)")
    action.add_argument("--revoke", metavar="ID", help="revoke this feed: its URL stops working")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    database = create_engine(settings.database_url)
    store = FeedStore(database)
    try:
        if args.create:
            engine = Engine(settings, open_users(settings, database))
            try:
                path = calendar_path(args.user, args.create)
                if path not in {c.path for c in engine.list_calendars(args.user)}:
                    raise FeedError(404, f"{args.user} has no calendar {path}")
            finally:
                engine.close()
            feed, token = store.create(args.user, path)
            scheme = "https" if settings.server.tls_certificate else "http"
            print(f"feed {feed.id} of {path}; subscribe to this URL (keep it private, it needs no password):")
            print(f"{scheme}://{settings.server.host}:{settings.server.port}{FEEDS_PREFIX}{token}.ics")
        elif args.revoke:
            if not store.revoke(args.user, args.revoke):
                raise FeedError(404, f"{args.user} has no active feed {args.revoke}")
            print(f"feed {args.revoke} revoked")
        else:
            for feed in store.list(args.user):
                print(f"{feed.id}  {feed.calendar}  {'revoked' if feed.revoked_at else 'active'}")
    except FeedError as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    return 0
