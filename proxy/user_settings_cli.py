"""``calrelay timezone USER [ZONE | --clear]``: show or set a user's own time zone.

Works on the database directly (like ``calrelay link``), so it can run beside the server, which reads the
setting on every request that uses it.
"""

from __future__ import annotations

import argparse
import sys

from proxy.cluster.users_db import open_users
from proxy.database import create_engine
from proxy.settings_cli import settings_from_args
from proxy.user_settings import UserSettings, parse_zone


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "timezone", parents=[common], help="show or set a user's time zone (status page, availability, feeds)",
        description="Show USER's time zone, set it to ZONE (an IANA name such as Europe/Berlin), or --clear it "
        "to use [availability] timezone. It is what the status page shows times in, what availability queries "
        "read times without an offset in, and the time zone of the user's subscription feeds.",
    )
    parser.add_argument("user")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("zone", nargs="?", help="an IANA time zone name, e.g. Europe/Berlin")
    action.add_argument("--clear", action="store_true", help="use [availability] timezone again")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        zone = parse_zone(args.zone) if args.zone is not None else None
    except ValueError as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 2
    database = create_engine(settings.database_url)
    try:
        if args.user not in open_users(settings, database).records():
            print(f"calrelay: there is no calrelay user {args.user!r}; add one with `calrelay users add`",
                  file=sys.stderr)
            return 1
        store = UserSettings(database)
        if args.zone is not None or args.clear:
            store.set_timezone(args.user, zone)
        own = store.timezone(args.user)
    finally:
        database.dispose()
    default = settings.availability.timezone
    print(f"{args.user}: {own}" if own else f"{args.user}: {default} ([availability] timezone; none of their own)")
    return 0
