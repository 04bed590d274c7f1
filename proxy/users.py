"""``calrelay users``: add, list and remove the accounts that may log in, and change passwords.

The accounts are kept in the database (``[storage] database``), so a user added through any instance's
configuration logs in on every instance sharing it, within about a second. A users file of earlier versions is
imported once, by the first command or server start that finds it (see :mod:`proxy.cluster.users_db`).

``users add`` never replaces an existing account by accident: it refuses a name that is taken unless
``--force`` is given, and even then it will not turn a service account into a plain user (that would lock the
CRM out); ``users passwd NAME`` changes only the password and keeps the role.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from proxy.auth import UserExists
from proxy.cluster.users_db import UsersTable, open_users
from proxy.config import Settings
from proxy.database import create_engine, redacted
from proxy.engine import Engine
from proxy.settings_cli import settings_from_args
from proxy.state import StateDB


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("users", help="manage users", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[common], help="add a user")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument(
        "--service", action="store_true", help="a service account (the CRM): may act on every user"
    )
    add.add_argument("--force", action="store_true",
                     help="replace an existing user of that name (a service account stays one unless removed)")
    add.set_defaults(func=add_user)
    passwd = actions.add_parser("passwd", parents=[common], help="change a user's password (the role stays)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    passwd.set_defaults(func=change_password)
    listing = actions.add_parser("list", parents=[common], help="list users")
    listing.set_defaults(func=list_users)
    remove = actions.add_parser("remove", parents=[common], help="remove a user (their calendars stay)")
    remove.add_argument("name")
    remove.set_defaults(func=remove_user)


class NoPassword(Exception):
    """No password to read: no terminal to ask on, and --password-stdin not given."""


def read_password(from_stdin: bool, prompt: str) -> str:
    """The password from standard input (one line) or asked on the terminal; NoPassword when neither works."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise NoPassword("no terminal to ask for the password on: pipe it in with --password-stdin")
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise NoPassword("no password was typed") from None


@contextmanager
def _users(settings: Settings) -> Iterator[UsersTable]:
    database = create_engine(settings.database_url, pool_size=1)
    try:
        yield open_users(settings, database)
    finally:
        database.dispose()


def add_user(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _users(settings) as users:
        return _add_user(args, settings, users)


def _add_user(args: argparse.Namespace, settings: Settings, users: UsersTable) -> int:
    existing = users.records().get(args.name)
    if existing is not None and not args.force:
        print(f"calrelay: user {args.name!r} already exists "
              f"({'service account' if existing.is_service else 'user'}); change the password with "
              f"`calrelay users passwd {args.name}`, or pass --force to replace the account", file=sys.stderr)
        return 1
    if existing is not None and existing.is_service and not args.service:
        print(f"calrelay: {args.name!r} is a service account and --service was not given; refusing to make it a "
              f"plain user (the CRM would be locked out). Use `calrelay users passwd {args.name}` to change its "
              "password, or `users remove` first to make it a plain user", file=sys.stderr)
        return 1
    try:
        password = read_password(args.password_stdin, f"Password for {args.name}: ")
        users.add(args.name, password, args.service, replace=args.force)
    except (ValueError, NoPassword) as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 2
    except UserExists:  # added by someone else meanwhile
        print(f"calrelay: user {args.name!r} already exists", file=sys.stderr)
        return 1
    # Create the principal now, so a service account can write below it before the user ever logs in.
    engine = Engine(settings, users)
    try:
        engine.ensure_principal(args.name)
    finally:
        engine.close()
    role = "service account" if args.service else "user"
    print(f"{role} {args.name} saved in the database {redacted(settings.database_url)}")
    return 0


def change_password(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _users(settings) as users:
        if args.name not in users.records():
            print(f"calrelay: no user {args.name!r} in {redacted(settings.database_url)}; add one with "
                  "`calrelay users add`", file=sys.stderr)
            return 1
        try:
            users.set_password(args.name, read_password(args.password_stdin, f"New password for {args.name}: "))
        except (ValueError, NoPassword) as error:
            print(f"calrelay: {error}", file=sys.stderr)
            return 2
        except KeyError:  # removed by someone else meanwhile
            print(f"calrelay: no user {args.name!r}", file=sys.stderr)
            return 1
    print(f"password of {args.name} changed")
    return 0


def list_users(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _users(settings) as users:
        for record in sorted(users.records().values(), key=lambda r: r.name):
            print(f"{record.name}\t{'service' if record.is_service else 'user'}")
    return 0


def remove_user(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _users(settings) as users:
        if not users.remove(args.name):
            print(f"calrelay: no user {args.name!r} in {redacted(settings.database_url)}", file=sys.stderr)
            return 1
        # A removed user's iCloud link goes too: no relay for nobody, and no stored app-specific password.
        state = StateDB(users.engine)
        unlinked = state.delete_link(args.name)
    note = "; their iCloud link is removed" if unlinked else ""
    print(f"removed {args.name}{note}; their calendars remain in {settings.storage.data_dir}")
    return 0
