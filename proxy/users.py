"""``calrelay users``: add, list and remove the accounts that may log in."""

from __future__ import annotations

import argparse
import getpass
import sys

from proxy.auth import UsersFile
from proxy.engine import Engine
from proxy.settings_cli import settings_from_args
from proxy.state import StateDB


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("users", help="manage users", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[common], help="add a user or change a password")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument(
        "--service", action="store_true", help="a service account (the CRM): may act on every user"
    )
    add.set_defaults(func=add_user)
    listing = actions.add_parser("list", parents=[common], help="list users")
    listing.set_defaults(func=list_users)
    remove = actions.add_parser("remove", parents=[common], help="remove a user (their calendars stay)")
    remove.add_argument("name")
    remove.set_defaults(func=remove_user)


def add_user(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
    users = UsersFile(settings.users_file)
    try:
        users.add(args.name, password, args.service)
    except ValueError as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 2
    # Create the principal now, so a service account can write below it before the user ever logs in.
    engine = Engine(settings, users)
    try:
        engine.ensure_principal(args.name)
    finally:
        engine.close()
    role = "service account" if args.service else "user"
    print(f"{role} {args.name} saved in {settings.users_file}")
    return 0


def list_users(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    for record in sorted(UsersFile(settings.users_file).records().values(), key=lambda r: r.name):
        print(f"{record.name}\t{'service' if record.is_service else 'user'}")
    return 0


def remove_user(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not UsersFile(settings.users_file).remove(args.name):
        print(f"calrelay: no user {args.name!r} in {settings.users_file}", file=sys.stderr)
        return 1
    # A removed user's iCloud link goes too: no relay for nobody, and no stored app-specific password.
    state = StateDB(settings.database_url)
    try:
        unlinked = state.delete_link(args.name)
    finally:
        state.close()
    note = "; their iCloud link is removed" if unlinked else ""
    print(f"removed {args.name}{note}; their calendars remain in {settings.storage.data_dir}")
    return 0
