"""``calrelay db …``: the database's own commands: the schema (``db upgrade``, ``db check``) and
``db import-files DIR``, which moves a data directory of the file layout in (see :mod:`proxy.file_import`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import sqlalchemy as sa

from proxy import database, schema
from proxy.outage import reachable
from proxy.settings_cli import settings_from_args


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    db = subparsers.add_parser("db", help="the database: schema upgrades and checks, importing the file layout",
                               description="Commands for calrelay's database ([storage] database).")
    commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    upgrade = commands.add_parser("upgrade", parents=[common], help="create or upgrade the schema",
                                  description=run_upgrade.__doc__)
    upgrade.set_defaults(func=run_upgrade)
    check = commands.add_parser("check", parents=[common], help="exit 1 unless the schema is current",
                                description=run_check.__doc__)
    check.set_defaults(func=run_check)
    imports = commands.add_parser(
        "import-files", parents=[common], help="import collections and relay state of a file-layout data directory",
        description="Copy DIR/collections (Radicale's file storage), DIR/state.sqlite3 (links, item status, "
        "pending work) and DIR/users into the configured storage and database, without loss. Stop the server first. "
        "Re-running it is harmless. Items that this calrelay's rules refuse stop the import before anything is "
        "written, unless --skip-invalid leaves them out.",
    )
    imports.add_argument("directory", metavar="DIR", type=Path, help="the data directory to import")
    imports.add_argument("--skip-invalid", action="store_true",
                         help="leave out (and list) items refused by today's rules, with their relay status")
    imports.set_defaults(func=run_import_files)


class ProgressBar:
    """One line on standard error, redrawn at most ten times a second (and at the end)."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._drawn = 0.0

    def __call__(self, done: int, total: int, what: str) -> None:
        now = time.monotonic()
        if done < total and now - self._drawn < 0.1:
            return
        self._drawn = now
        filled = self.WIDTH * done // total if total else self.WIDTH
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} {what}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def run_import_files(args: argparse.Namespace) -> int:
    from proxy.file_import import FileImportError, import_files

    settings = settings_from_args(args)
    progress = None if args.quiet else ProgressBar(sys.stderr)
    try:
        report = import_files(args.directory, settings, progress, skip_invalid=args.skip_invalid)
    except FileImportError as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 1
    state = ", ".join(f"{count} {name}" for name, count in report.state_rows.items()) or "no state"
    where = f"{report.collections} collections, {report.items} items"
    users = f"; {report.users} users" if report.users else ""
    print(f"imported {args.directory}: {where}; {state}{users}; into {database.redacted(settings.database_url)}")
    if report.skipped:
        print(f"left out {len(report.skipped)} refused item(s), still in {args.directory}:")
        for refused in report.skipped:
            print(f"  {refused}")
    if report.reencrypted:
        print(f"re-encrypted {report.reencrypted} iCloud passwords with {settings.storage.data_dir}'s key")
    return 0


def _on_schema(args: argparse.Namespace, action: Callable[[sa.Engine], str]) -> int:
    """Run ``action`` on the configured database and print what it says; a schema error is one line, exit 1."""
    settings = settings_from_args(args)
    engine = database.create_engine(settings.database_url)
    try:
        with reachable(engine):
            said = action(engine)
    except schema.SchemaError as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{database.redacted(settings.database_url)}: {said}")
    return 0


def run_upgrade(args: argparse.Namespace) -> int:
    """Create the schema in an empty database, or bring an older one to this calrelay's version."""

    def upgrade(engine: sa.Engine) -> str:
        before, after = schema.upgrade(engine)
        if before is None:
            return f"schema created at version {after}"
        if before == after:
            return f"schema already at version {after}"
        return f"schema upgraded from version {before} to {after}"

    return _on_schema(args, upgrade)


def run_check(args: argparse.Namespace) -> int:
    """Say whether the database's schema is the one this calrelay uses (exit 0) or not (exit 1)."""

    def check(engine: sa.Engine) -> str:
        schema.check(engine)
        return f"schema version {schema.VERSION}"

    return _on_schema(args, check)
