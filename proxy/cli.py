"""The ``calrelay`` command line.

Each subcommand lives in its own module with a ``register(subparsers, common)`` function that adds its
parser and sets ``func`` to a callable taking the parsed arguments and returning an exit status.
``common`` is the parent parser holding the options every subcommand accepts (``--config``, ``--data``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from proxy import __version__
from proxy.config import ConfigError
from proxy.outage import DatabaseUnavailable
from proxy.private import restrict_umask


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="TOML configuration file (default: built-in defaults)")
    common.add_argument("--data", metavar="DIR", help="data directory (overrides [storage] data_dir)")
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging: -v debug, -vv also Radicale's and python-caldav's")
    common.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return common


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Help texts come from docstrings written in reST; a terminal shows `x`, not ``x``."""
    for holder in (parser, *parser._actions):
        for attribute in ("description", "epilog", "help"):
            text = getattr(holder, attribute, None)
            if isinstance(text, str):
                setattr(holder, attribute, text.replace("``", "`"))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = choice.help.replace("``", "`") if choice.help else choice.help
            for subparser in set(action.choices.values()):
                _plain_help(subparser)


def build_parser() -> argparse.ArgumentParser:
    from proxy import audit_cli, config_cli, db_cli, feeds_cli, serve, user_settings_cli, users
    from proxy.emulator import cli as emulator_cli
    from proxy.links import cli as links_cli
    from proxy.replay import cli as replay_cli

    parser = argparse.ArgumentParser(
        prog="calrelay",
        description="A local CalDAV server that relays a CRM's booking calendars to iCloud and back.",
    )
    parser.add_argument("--version", action="version", version=f"calrelay {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()
    for module in (serve, users, config_cli, links_cli, emulator_cli, replay_cli, db_cli, audit_cli, feeds_cli,
                   user_settings_cli):
        module.register(subparsers, common)
    _plain_help(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    restrict_umask()  # before anything is created: data, state, keys and recordings are private
    args = build_parser().parse_args(argv)
    # INFO by default (what a running server does), -q warnings only, -v debug, -vv libraries' debug too.
    level = logging.WARNING if getattr(args, "quiet", False) else (logging.INFO, logging.DEBUG)[min(args.verbose, 1)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        # Both libraries narrate every request at INFO (Radicale its configuration too, python-caldav each
        # HTML error body of iCloud with a traceback); calrelay logs what matters about them itself.
        for chatty in ("radicale", "caldav"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except ConfigError as error:
        print(f"calrelay: configuration error: {error}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
