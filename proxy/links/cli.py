"""``calrelay link``, ``unlink``, ``sync`` and ``status``: iCloud links from the command line.

They work on the data directory directly (like ``calrelay users``), so they can run while the server runs:
the server notices the changed link in the state database within seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from proxy import presence
from proxy.auth import UsersFile
from proxy.config import Settings
from proxy.engine import Engine
from proxy.links.rules import LinkError
from proxy.links.service import LinkRequest, LinkService, calendar_listing, link_status
from proxy.relay.progress import describe
from proxy.secretbox import SecretBox, SecretError
from proxy.settings_cli import settings_from_args
from proxy.state import AsyncState


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    link = subparsers.add_parser(
        "link", parents=[common], help="link a user to an iCloud account, or list its calendars",
        description="Link USER's booking calendars to an iCloud account (verifies the credentials), or --list "
        "the account's calendars.",
    )
    link.add_argument("user")
    link.add_argument("--apple-id", metavar="EMAIL", help="the Apple ID (e-mail address)")
    link.add_argument("--app-password-stdin", action="store_true",
                      help="read the app-specific password (xxxx-xxxx-xxxx-xxxx) from standard input")
    link.add_argument("--server", metavar="URL", help="CalDAV server (default: [upstream] default_server)")
    link.add_argument("--primary", metavar="NAME", help="iCloud calendar that receives appointments (rule 3)")
    link.add_argument("--conflict", metavar="NAME", action="append", default=[],
                      help="iCloud calendar whose events block availability (repeatable; rule 4)")
    link.add_argument("--primary-not-conflict", action="store_true",
                      help="events of the primary calendar do not block availability")
    link.add_argument("--mode", choices=("two-way", "one-way"), default="two-way")
    link.add_argument("--icloud-deletions", choices=("keep", "propagate"), default="keep",
                      help="what a deletion in iCloud does to an iCloud-born blocked slot (default keep)")
    link.add_argument("--calendar", metavar="NAME", action="append", default=[],
                      help="booking calendar to integrate (repeatable; default: all Round Robin, Collective, "
                      "Class Booking and Service calendars)")
    policy = link.add_argument_group("policies (docs/relay.md, \"Policies\")")
    policy.add_argument("--attendees", choices=("description", "schedule-agent-client"),
                        help="attendees into the DESCRIPTION (default), or kept as ATTENDEEs with "
                        "SCHEDULE-AGENT=CLIENT (iCloud still invites addresses it hosts)")
    policy.add_argument("--privacy-title", metavar="TEMPLATE",
                        help="what iCloud sees as the title: {title}, {calendar} or fixed text such as Busy; "
                        "description, location and URL are then removed (default: the full event)")
    policy.add_argument("--all-day", choices=("as-marked", "always-busy", "never-busy"),
                        help="what an all-day iCloud event does to availability (default as-marked)")
    policy.add_argument("--no-travel-time", dest="travel_time_busy", action="store_false", default=None,
                        help="iCloud travel time before an event does not count as busy")
    policy.add_argument("--unanswered", choices=("busy", "free"),
                        help="invitations not answered yet (PARTSTAT=NEEDS-ACTION): busy (default) or free")
    policy.add_argument("--tentative", choices=("busy", "free"),
                        help='invitations answered "maybe" (PARTSTAT=TENTATIVE): busy (default) or free')
    policy.add_argument("--calendar-policy", metavar="NAME:POLICY=VALUE", action="append", default=[],
                        help="an availability policy of one linked iCloud calendar (repeatable), e.g. "
                        "home:all_day=always-busy; the calendar takes the link's for the others")
    link.add_argument("--list", action="store_true", help="list the account's calendars instead of linking")
    link.add_argument("--json", action="store_true", help="print JSON")
    link.add_argument("--wait", action="store_true",
                      help="show a progress bar until the first sync of every linked calendar is done")
    link.set_defaults(func=run_link)

    policy_cmd = subparsers.add_parser(
        "policy", parents=[common], help="show or change a link's policies, or one iCloud calendar's",
        description="Show USER's link policies and each linked iCloud calendar's; with options, change them "
        "without linking again. With --calendar, the availability options set that calendar's own policies "
        "(the link's apply to what it does not set). docs/relay.md, \"Policies\".",
    )
    policy_cmd.add_argument("user")
    policy_cmd.add_argument("--calendar", metavar="NAME", help="the linked iCloud calendar to change (its name)")
    policy_cmd.add_argument("--attendees", choices=("description", "schedule-agent-client"))
    policy_cmd.add_argument("--privacy-title", metavar="TEMPLATE")
    policy_cmd.add_argument("--all-day", choices=("as-marked", "always-busy", "never-busy"))
    policy_cmd.add_argument("--travel-time", dest="travel_time_busy", action=argparse.BooleanOptionalAction,
                            default=None, help="iCloud travel time counts as busy before an event")
    policy_cmd.add_argument("--unanswered", choices=("busy", "free"))
    policy_cmd.add_argument("--tentative", choices=("busy", "free"))
    policy_cmd.add_argument("--reset", metavar="POLICY", action="append", default=[],
                            help="put one policy back (the link's to the default, a calendar's to the link's)")
    policy_cmd.add_argument("--inherit", action="store_true",
                            help="with --calendar: drop all of that calendar's own policies")
    policy_cmd.add_argument("--json", action="store_true", help="print JSON")
    policy_cmd.set_defaults(func=run_policy)

    unlink = subparsers.add_parser("unlink", parents=[common], help="remove a user's iCloud link and mirrors")
    unlink.add_argument("user")
    unlink.set_defaults(func=run_unlink)

    sync = subparsers.add_parser(
        "sync", parents=[common], help="pull a user's iCloud calendars now",
        description="Ask the running server to pull USER's iCloud calendars now (and push what is pending), "
        "then show the result.",
    )
    sync.add_argument("user")
    sync.add_argument("--now", action="store_true", required=True, help="do not wait for the next poll")
    sync.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the pull (default 60)")
    sync.set_defaults(func=run_sync)

    status = subparsers.add_parser("status", parents=[common], help="show iCloud links, sync state, pending work")
    status.add_argument("user", nargs="?")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=run_status)


@asynccontextmanager
async def _service(settings: Settings) -> AsyncIterator[LinkService]:
    users = UsersFile(settings.users_file)
    engine = Engine(settings, users)
    state = AsyncState(settings.database_url)
    try:
        yield LinkService(settings, engine, state, SecretBox.for_data_dir(settings.storage.data_dir))
    finally:
        state.close()
        engine.close()


def _run(args: argparse.Namespace, work: Callable[[LinkService], Awaitable[int]]) -> int:
    settings = settings_from_args(args)

    async def main() -> int:
        async with _service(settings) as service:
            return await work(service)

    try:
        return asyncio.run(main())
    except (LinkError, SecretError) as error:
        print(f"calrelay: {error}", file=sys.stderr)
        return 1


def _read_password(args: argparse.Namespace) -> str:
    if args.app_password_stdin:
        return sys.stdin.readline().strip()
    if not sys.stdin.isatty():
        raise LinkError("no_password", "no terminal to ask for the app-specific password on: pipe it in with "
                        "--app-password-stdin")
    try:
        return getpass.getpass("App-specific password: ")
    except EOFError:
        raise LinkError("no_password", "no app-specific password was typed") from None


def run_link(args: argparse.Namespace) -> int:
    async def work(service: LinkService) -> int:
        if args.list:
            if args.apple_id:
                credentials = (args.apple_id, _read_password(args), args.server or service.default_server_url())
            else:
                credentials = await service.credentials(args.user)
            listing = calendar_listing(await service.discover(*credentials))
            _print_listing(listing, args.json)
            return 0
        if not args.apple_id or not args.primary:
            raise LinkError("missing_field", "linking needs --apple-id and --primary (or use --list)")
        linked_at = time.time()
        _, _, notes = await service.link(LinkRequest(
            user=args.user, apple_id=args.apple_id, app_password=_read_password(args),
            server_url=args.server or service.default_server_url(), primary=args.primary,
            conflicts=tuple(args.conflict), primary_blocks=not args.primary_not_conflict, mode=args.mode,
            deletions=args.icloud_deletions, calendars=tuple(args.calendar), policies=_policy_changes(args),
            calendar_policies=_calendar_policies(args.calendar_policy),
        ))
        for note in notes:
            print(f"calrelay: note: {note}", file=sys.stderr)
        if args.wait and not await _wait_for_first_sync(service, args.user, linked_at):
            return 1
        _print_status(await service.state.call(link_status, service.state.db, args.user), args.json)
        return 0

    return _run(args, work)


#: Seconds ``link --wait`` waits for the running server to start a pull before it gives up.
WAIT_FOR_SERVER = 30.0


async def _wait_for_first_sync(service: LinkService, user: str, linked_at: float) -> bool:
    """A progress bar on stderr until every linked calendar has completed a pull since ``linked_at``."""
    db = service.state.db
    started = time.monotonic()
    while True:
        calendars = await service.state.call(db.link_calendars, user)
        running = await service.state.call(db.progress, user)
        done = [c for c in calendars if (c.last_success_at or 0) >= linked_at]
        total = sum(int(p["total"]) for p in running.values())
        written = sum(int(p["written"]) for p in running.values())
        fraction = written / total if total else len(done) / max(len(calendars), 1)
        bar = "#" * int(fraction * 30)
        print(f"\rfirst sync: [{bar:<30}] {len(done)}/{len(calendars)} calendars"
              + (f", {written}/{total} events" if total else ""), end="", file=sys.stderr, flush=True)
        if calendars and len(done) == len(calendars):
            print(file=sys.stderr)
            return True
        attempted = running or any((c.last_attempt_at or 0) >= linked_at for c in calendars)
        if not attempted and time.monotonic() - started > WAIT_FOR_SERVER:
            print(f"\ncalrelay: no pull of {user}'s calendars within {WAIT_FOR_SERVER:.0f} s; is `calrelay serve` "
                  "running with this data directory?", file=sys.stderr)
            return False
        await asyncio.sleep(0.2)


def run_unlink(args: argparse.Namespace) -> int:
    async def work(service: LinkService) -> int:
        if not await service.unlink(args.user):
            print(f"calrelay: {args.user} has no iCloud link", file=sys.stderr)
            return 1
        print(f"unlinked {args.user}; their mirrors are removed, events already in iCloud stay there")
        return 0

    return _run(args, work)


def run_sync(args: argparse.Namespace) -> int:
    async def work(service: LinkService) -> int:
        db = service.state.db
        if await service.state.call(db.link, args.user) is None:
            raise LinkError("not_linked", f"{args.user} has no iCloud link", 404)
        if not presence.server_running(service.settings.storage.data_dir):
            raise LinkError("not_serving", f"no `calrelay serve` is running with the data directory "
                            f"{service.settings.storage.data_dir}; start it, and the pull runs at once", 503)
        asked = time.time()
        await service.state.call(db.request_sync, args.user)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            calendars = await service.state.call(db.link_calendars, args.user)
            if calendars and all((c.last_attempt_at or 0) >= asked for c in calendars):
                _print_status(await service.state.call(link_status, db, args.user), False)
                return 0 if all(c.last_error is None for c in calendars) else 1
            await asyncio.sleep(0.2)
        print(f"calrelay: no pull of {args.user}'s calendars within {args.timeout:.0f} s; is `calrelay serve` "
              "running with this data directory?", file=sys.stderr)
        return 1

    return _run(args, work)


def run_status(args: argparse.Namespace) -> int:
    async def work(service: LinkService) -> int:
        db = service.state.db
        if args.user and args.user not in await service.engine.call(service.engine.users.records):
            raise LinkError("unknown_user", f"there is no calrelay user {args.user!r} (see `calrelay users list`)", 404)
        users = [args.user] if args.user else [link.user for link in await service.state.call(db.links)]
        reports = [await service.state.call(link_status, db, user) for user in users]
        if args.json:
            print(json.dumps(reports if not args.user else reports[0], indent=2))
        elif not reports:
            print("no iCloud links")
        for report in reports if not args.json else ():
            _print_status(report, False)
        return 0

    return _run(args, work)


def _print_listing(listing: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(listing, indent=2))
        return
    # Names are printed whole: they are what --primary and --conflict take (shared calendars have 64-hex ids).
    width = max([len("NAME"), *(len(c["name"]) for c in listing)])
    shown = max([len("DISPLAY NAME"), *(len(c["display_name"]) for c in listing)])
    print(f"{'NAME':<{width}} {'DISPLAY NAME':<{shown}} {'COLOUR':<10} {'TYPE':<7} {'WRITABLE':<9} {'SHARED':<7} "
          "SUBSCRIBED")
    for c in listing:
        print(f"{c['name']:<{width}} {c['display_name']:<{shown}} {c['color'] or '-':<10} "
              f"{','.join(c['components']):<7} {_yes(c['writable']):<9} {_yes(c['shared']):<7} {_yes(c['subscribed'])}")


def _print_status(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    if not report["linked"]:
        print(f"{report['user']}: not linked")
        return
    print(f"{report['user']}: {report['state']} — {report['apple_id']} at {report['server']} ({report['mode']}, "
          f"iCloud deletions: {report['icloud_deletions']})")
    print("  policies: " + ", ".join(f"{key}={value!r}" for key, value in report.get("policies", {}).items()))
    if report["last_error"]:
        print(f"  last error ({report['last_error_at']}): {report['last_error']}")
    for c in report["calendars"]:
        blocks = "" if c["blocks_availability"] else ", does not block"
        print(f"  {c['role']:<8} {c['name']} → {c['mirror']} (last pull: {c['last_pull'] or 'never'}, "
              f"token: {c['token_state']}{blocks})" + (f" error: {c['last_error']}" if c["last_error"] else ""))
        if c.get("import"):
            print(f"           {describe(c['import'])}")
    if report["pending"]:
        print(f"  pending ({len(report['pending'])}):")
        for p in report["pending"]:
            print(f"    {p['action']} {p['uid']}: {p['reason']} (attempts {p['attempts']}, since {p['since']})")
    else:
        print("  nothing pending")


def _policy_changes(args: argparse.Namespace) -> dict[str, Any]:
    names = ("attendees", "privacy_title", "all_day", "travel_time_busy", "unanswered", "tentative")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _calendar_policies(options: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME:POLICY=VALUE`` options as the link request's calendar_policies (checked by the service)."""
    result: dict[str, dict[str, Any]] = {}
    for option in options:
        name, _, setting = option.rpartition(":")
        key, equals, value = setting.partition("=")
        if not name or not equals:
            raise LinkError("invalid_policy", f"--calendar-policy {option!r}: write NAME:POLICY=VALUE, e.g. "
                            "home:all_day=always-busy")
        key = key.strip().replace("-", "_")
        result.setdefault(name, {})[key] = _policy_value(key, value.strip())
    return result


def _policy_value(key: str, value: str) -> Any:
    if key != "travel_time_busy":
        return value
    if value.lower() in ("true", "yes", "on"):
        return True
    if value.lower() in ("false", "no", "off"):
        return False
    raise LinkError("invalid_policy", f"policy travel_time_busy must be true or false, not {value!r}")


def run_policy(args: argparse.Namespace) -> int:
    async def work(service: LinkService) -> int:
        changes: dict[str, Any] = _policy_changes(args)
        changes.update(dict.fromkeys((key.replace("-", "_") for key in args.reset), None))
        if args.inherit and not args.calendar:
            raise LinkError("invalid_policy", "--inherit needs --calendar NAME (the calendar whose own policies go)")
        if args.calendar:
            changes = {"calendars": {args.calendar: None if args.inherit and not changes else changes}}
            if args.inherit and changes["calendars"][args.calendar]:
                raise LinkError("invalid_policy", "--inherit drops the calendar's own policies; give no others")
        if changes:
            await service.set_policies(args.user, changes)
        report = await service.state.call(link_status, service.state.db, args.user)
        if not report["linked"]:
            raise LinkError("not_linked", f"{args.user} has no iCloud link", 404)
        if args.json:
            print(json.dumps({"policies": report["policies"],
                              "calendars": {c["name"]: {"policies": c["policies"], "own_policies": c["own_policies"]}
                                            for c in report["calendars"]}}, indent=2))
            return 0
        print(f"{args.user}: " + ", ".join(f"{key}={value!r}" for key, value in report["policies"].items()))
        for c in report["calendars"]:
            own = c["own_policies"]
            print(f"  {c['role']:<8} {c['name']}: " + ", ".join(
                f"{key}={value!r}" + (" (own)" if key in own else "") for key, value in c["policies"].items()))
        return 0

    return _run(args, work)


def _yes(value: bool) -> str:
    return "yes" if value else "no"
