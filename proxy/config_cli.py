"""``calrelay config``: print the annotated default configuration, or check a configuration file."""

from __future__ import annotations

import argparse
import sys

from proxy import config
from proxy.settings_cli import settings_from_args


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "config", parents=[common], help="show the default configuration or check one", description=__doc__
    )
    parser.add_argument("--check", action="store_true", help="load --config and report problems, print nothing else")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.check:
        try:
            settings = settings_from_args(args)
        except config.ConfigError as error:
            for problem in error.problems:  # every problem, one a line, so that one run shows all to fix
                print(f"calrelay: configuration error: {problem}", file=sys.stderr)
            return 2
        print(f"configuration OK; data directory {settings.storage.data_dir}")
    else:
        print(config.annotated_defaults(), end="")
    return 0
