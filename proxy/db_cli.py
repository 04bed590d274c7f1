"""``calrelay db …``: the database's schema (``db upgrade``, ``db check``)."""

from __future__ import annotations

import argparse
import sys

from proxy import database, schema
from proxy.settings_cli import settings_from_args


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("db", help="the database: schema upgrades and checks")
    commands = parser.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    upgrade = commands.add_parser("upgrade", parents=[common], help="create or upgrade the schema",
                                  description=run_upgrade.__doc__)
    upgrade.set_defaults(func=run_upgrade)
    check = commands.add_parser("check", parents=[common], help="exit 1 unless the schema is current",
                                description=run_check.__doc__)
    check.set_defaults(func=run_check)


def run_upgrade(args: argparse.Namespace) -> int:
    """Create the schema in an empty database, or bring an older one to this calrelay's version."""
    settings = settings_from_args(args)
    engine = database.create_engine(settings.database_url)
    try:
        before, after = schema.upgrade(engine)
    except schema.SchemaError as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    where = database.redacted(settings.database_url)
    if before is None:
        print(f"{where}: schema created at version {after}")
    elif before == after:
        print(f"{where}: schema already at version {after}")
    else:
        print(f"{where}: schema upgraded from version {before} to {after}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Say whether the database's schema is the one this calrelay uses (exit 0) or not (exit 1)."""
    settings = settings_from_args(args)
    engine = database.create_engine(settings.database_url)
    try:
        schema.check(engine)
    except schema.SchemaError as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{database.redacted(settings.database_url)}: schema version {schema.VERSION}")
    return 0
