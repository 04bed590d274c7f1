"""``calrelay emulator``: run the iCloud emulator, or change the faults of a running one.

calrelay emulator [--config FILE] [--host H] [--port P] [--partition-port P2] [--data DIR] [--accounts FILE] [...]
calrelay emulator faults --url http://127.0.0.1:8443 [fault flags] [--clear]
calrelay emulator mail --url http://127.0.0.1:8443 [--clear]

Run on its own, the emulator is the one upstream of several calrelay instances (each points ``[upstream]
default_server`` at its discovery URL), which the emulator embedded in one ``calrelay serve`` cannot be. With
``--config``, the ``[emulator]`` table (host, port, partition_port, accounts_file) of the instances'
configuration supplies what the flags do not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from proxy.emulator.accounts import AccountsError, default_accounts, load_accounts
from proxy.emulator.app import EmulatorServer
from proxy.emulator.context import EmulatorOptions

log = logging.getLogger(__name__)

DEFAULT_PORT = 8443
DEFAULT_CONTROL_URL = f"http://127.0.0.1:{DEFAULT_PORT}"

#: command-line flag → fault switch (see proxy.emulator.faults.FaultSettings)
FAULT_FLAGS: dict[str, tuple[str, type, str]] = {
    "--throttle": ("throttle_seconds", float, "throttle every request for N seconds from the next one"),
    "--throttle-status": ("throttle_status", int, "status of a throttled answer: 503 (default) or 429"),
    "--retry-after": ("retry_after", int, "Retry-After seconds sent while throttled (default 1)"),
    "--budget": ("budget_per_minute", int, "requests per account per minute before throttling (0: none)"),
    "--budget-backoff": ("budget_backoff_seconds", float, "seconds an account over budget stays refused"),
    "--error-rate": ("error_rate", float, "share 0..1 of requests answered with a random 500/502"),
    "--drop-rate": ("drop_rate", float, "share 0..1 of requests whose connection is dropped"),
    "--latency-ms": ("latency_ms", int, "delay added to every request"),
    "--lag-ms": ("visibility_lag_ms", int, "delay before a new object shows in REPORT/multiget/listing"),
}
FAULT_SWITCHES: dict[str, tuple[str, str]] = {
    "--etag-churn": ("etag_churn", "change every ETag before each request (no client write)"),
    "--revoke-app-passwords": ("revoke_app_passwords", "refuse every app-specific password with 401"),
}

#: behaviour switches from CalendarServer, all on by default (docs/emulator.md)
CCS_SWITCHES: dict[str, str] = {
    "--default-alarms": "add the default alarm to new events without a VALARM",
    "--timezones-by-reference": "strip standard VTIMEZONEs on PUT",
    "--query-limits": "refuse time ranges beyond 365 days back / 5 years ahead and oversized answers",
    "--implicit-scheduling": "invite iCloud-hosted attendees despite SCHEDULE-AGENT=CLIENT; REPLY on delete",
    "--encode-at-in-hrefs": "spell @ as %40 in hrefs",
}


def _add_fault_arguments(parser: argparse.ArgumentParser, switchable_off: bool) -> None:
    group = parser.add_argument_group("fault switches")
    for flag, (dest, kind, text) in FAULT_FLAGS.items():
        group.add_argument(flag, dest=dest, type=kind, default=None, metavar="N", help=text)
    for flag, (dest, text) in FAULT_SWITCHES.items():
        action = argparse.BooleanOptionalAction if switchable_off else "store_true"
        group.add_argument(flag, dest=dest, action=action, default=None, help=text)


def _fault_changes(args: argparse.Namespace) -> dict[str, Any]:
    names = [dest for dest, _, _ in FAULT_FLAGS.values()] + [dest for dest, _ in FAULT_SWITCHES.values()]
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "emulator",
        parents=[common],
        help="run the local iCloud CalDAV emulator",
        description="Serve a local CalDAV server that behaves like iCloud (docs/emulator.md). Discovery "
        "listens on --port, the calendar home on the partition port; --data keeps its state across restarts. "
        "Several calrelay instances can share it: point their [upstream] default_server at its discovery URL. "
        "With --config, [emulator] host, port, partition_port and accounts_file are the defaults of the flags.",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"discovery port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--partition-port", type=int, help="calendar-home port (default: --port + 1)")
    parser.add_argument(
        "--accounts", metavar="FILE", help="accounts TOML (default: the built-in demo account)"
    )
    behaviour = parser.add_argument_group("behaviour options")
    behaviour.add_argument(
        "--well-known",
        choices=("multistatus", "redirect"),
        default="multistatus",
        help="/.well-known/caldav answers 207 like the principal, or 301 to /",
    )
    behaviour.add_argument(
        "--home-redirect",
        type=int,
        choices=(301, 302),
        help="the discovery port redirects /<DSID>/calendars/ to the partition port",
    )
    behaviour.add_argument(
        "--home-on-both-hosts",
        action="store_true",
        help="serve /<DSID>/calendars/ on the discovery port too (default: the partition port only, like iCloud)",
    )
    behaviour.add_argument(
        "--vcalendar-filter-status",
        type=int,
        choices=(400, 403),
        default=400,
        help="answer to a calendar-query with only a VCALENDAR comp-filter",
    )
    behaviour.add_argument(
        "--sync-token-error-element",
        action="store_true",
        help="add <valid-sync-token/> to the 403 for a bad sync token (iCloud: bare 403)",
    )
    for flag, text in CCS_SWITCHES.items():
        behaviour.add_argument(flag, action=argparse.BooleanOptionalAction, default=True, help=text)
    behaviour.add_argument(
        "--sync-token-lifetime-days",
        type=float,
        default=EmulatorOptions.sync_token_lifetime_days,
        help="days a sync token stays valid (0: forever; default 14)",
    )
    _add_fault_arguments(parser, switchable_off=False)
    parser.set_defaults(func=run)

    commands = parser.add_subparsers(dest="emulator_command", metavar="{faults,mail}")
    faults = commands.add_parser("faults", help="show or change the fault switches of a running emulator")
    faults.add_argument("--url", default=DEFAULT_CONTROL_URL, help="the emulator's discovery URL")
    faults.add_argument("--clear", action="store_true", help="switch every fault off first")
    _add_fault_arguments(faults, switchable_off=True)
    faults.set_defaults(func=run_faults)
    mail = commands.add_parser(
        "mail", help="print (or --clear) the invitation e-mail log of a running emulator"
    )
    mail.add_argument("--url", default=DEFAULT_CONTROL_URL, help="the emulator's discovery URL")
    mail.add_argument("--clear", action="store_true", help="empty the log")
    mail.set_defaults(func=run_mail)


def _with_configuration(args: argparse.Namespace) -> None:
    """Fill the flags not given from ``[emulator]`` of ``--config`` (else the built-in defaults)."""
    from proxy import config

    configured = config.load(Path(args.config)).emulator if getattr(args, "config", None) else None
    if args.host is None:
        args.host = configured.host if configured else "127.0.0.1"
    if args.port is None:
        args.port = configured.port if configured else DEFAULT_PORT
        if args.partition_port is None and configured:
            args.partition_port = configured.partition_port
    if args.accounts is None and configured and configured.accounts_file:
        args.accounts = str(configured.accounts_file)


def run(args: argparse.Namespace) -> int:
    _with_configuration(args)
    try:
        accounts = load_accounts(args.accounts) if args.accounts else default_accounts()
    except (AccountsError, OSError) as error:
        print(f"calrelay emulator: {error}", file=sys.stderr)
        return 2
    options = EmulatorOptions(
        well_known=args.well_known,
        home_redirect=args.home_redirect,
        home_on_partition_only=not args.home_on_both_hosts,
        vcalendar_filter_status=args.vcalendar_filter_status,
        sync_token_error_element=args.sync_token_error_element,
        sync_token_lifetime_days=args.sync_token_lifetime_days,
        **{
            flag.removeprefix("--").replace("-", "_"): getattr(args, flag.removeprefix("--").replace("-", "_"))
            for flag in CCS_SWITCHES
        },
    )
    server = EmulatorServer(
        args.host,
        args.port,
        args.partition_port if args.partition_port is not None else (args.port + 1 if args.port else 0),
        accounts=accounts,
        data_dir=args.data,
        options=options,
    )
    try:
        server.set_faults(**_fault_changes(args))
    except ValueError as error:
        print(f"calrelay emulator: {error}", file=sys.stderr)
        return 2
    asyncio.run(_serve_until_signalled(server))
    return 0


async def _serve_until_signalled(server: EmulatorServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    print(f"iCloud emulator: discovery {server.discovery_url}  partition {server.partition_url}", flush=True)
    for account in server.accounts:
        print(
            f"  account {account.apple_id}  DSID {account.dsid}  app password {account.app_passwords[0]}",
            flush=True,
        )
    print(f"  control API {server.discovery_url}_emulator/  (loopback only)", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("iCloud emulator shutting down")
        await server.stop()


def _call(url: str, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        f"{url.rstrip('/')}/_emulator/{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data else {},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def run_faults(args: argparse.Namespace) -> int:
    changes = _fault_changes(args)
    try:
        if args.clear:
            result = _call(args.url, "DELETE", "faults")
        if changes or not args.clear:
            result = (
                _call(args.url, "POST", "faults", changes) if changes else _call(args.url, "GET", "faults")
            )
    except urllib.error.HTTPError as error:
        print(
            f"calrelay emulator faults: {error.code} {error.read().decode(errors='replace')}", file=sys.stderr
        )
        return 2
    except urllib.error.URLError as error:
        print(f"calrelay emulator faults: cannot reach {args.url}: {error.reason}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def run_mail(args: argparse.Namespace) -> int:
    try:
        result = _call(args.url, "DELETE" if args.clear else "GET", "mail")
    except urllib.error.URLError as error:
        print(f"calrelay emulator mail: cannot reach {args.url}: {error.reason}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
