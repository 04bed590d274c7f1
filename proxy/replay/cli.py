"""``calrelay replay FILE --target URL``: exit 0 when every response matched, 1 when one differed, 2 for bad
input (an unreadable HAR file, a target that cannot be reached, credentials the target refuses)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp

from proxy.replay import har
from proxy.replay.runner import AuthenticationFailed, Target, TargetUnreachable, replay

EXIT_MATCHED, EXIT_DIFFERED, EXIT_BAD_INPUT = 0, 1, 2


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "replay",
        parents=[common],
        help="replay a HAR recording against a CalDAV server and report differences",
        description=__doc__,
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="HAR 1.2 recording (calrelay serve --record)")
    parser.add_argument("--target", required=True, metavar="URL", help="server to replay against")
    parser.add_argument("--user", metavar="U", help="authenticate as U where the recording authenticated")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read --user's password from the first line of stdin"
    )
    parser.add_argument(
        "--only", metavar="METHOD,...", help="replay only these methods (e.g. PUT,REPORT)", type=_methods
    )
    parser.add_argument("--stop-on-first", action="store_true", help="stop at the first differing response")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="per-request timeout")
    parser.set_defaults(func=run)


def _methods(value: str) -> list[str]:
    methods = [method.strip().upper() for method in value.split(",") if method.strip()]
    if not methods:
        raise argparse.ArgumentTypeError("give at least one method, e.g. PUT,REPORT")
    return methods


def run(args: argparse.Namespace) -> int:
    try:
        target = Target.parse(args.target)
        auth = _auth(args)
        exchanges = har.load(args.file)
    except (ValueError, har.HarError) as error:
        print(f"calrelay replay: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        report = asyncio.run(
            replay(
                exchanges,
                target,
                authorization=auth,
                only=args.only,
                stop_on_first=args.stop_on_first,
                timeout=args.timeout,
            )
        )
    except (TargetUnreachable, AuthenticationFailed) as error:
        print(f"calrelay replay: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report.render(verbose=args.verbose > 0))
    return EXIT_MATCHED if report.matched else EXIT_DIFFERED


def _auth(args: argparse.Namespace) -> str | None:
    """The Authorization header value for --user, or None."""
    if args.password_stdin and not args.user:
        raise ValueError("--password-stdin needs --user")
    if not args.user:
        return None
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else ""
    return aiohttp.encode_basic_auth(args.user, password)
