"""``calrelay activity USER [--uid UID]``: the audit trail of relay decisions, newest first.

It reads the database directly (like ``calrelay status``), so it works while the server runs.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from zoneinfo import ZoneInfo

from proxy.audit import DEFAULT_LIMIT, MAX_LIMIT, AuditLog
from proxy.settings_cli import settings_from_args
from proxy.user_settings import UserSettings


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "activity", parents=[common], help="what the relay did for a user, and why",
        description="The relay's decisions for USER, newest first: what was created, updated or deleted on "
        "iCloud, imported, skipped, kept, resolved, or is waiting, and the reason.",
    )
    parser.add_argument("user")
    parser.add_argument("--uid", help="only the entries of this event (UID)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"most entries (default {DEFAULT_LIMIT})")
    parser.add_argument("--before", type=int, metavar="ID", help="entries older than this id (paging)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    audit = AuditLog.open(settings.database_url)
    try:
        entries = audit.query(args.user, args.uid, args.before, max(1, min(args.limit, MAX_LIMIT)))
        own_zone = UserSettings(audit.engine).timezone(args.user)  # times in the user's own zone
    finally:
        audit.close()
        audit.engine.dispose()
    if args.json:
        print(json.dumps([entry.to_json() for entry in entries], indent=2))
        return 0
    if not entries:
        print(f"no relay activity recorded for {args.user}" + (f" and UID {args.uid}" if args.uid else ""))
        return 0
    zone = ZoneInfo(own_zone or settings.availability.timezone)
    for entry in entries:
        when = datetime.fromtimestamp(entry.at, zone).strftime("%Y-%m-%d %H:%M:%S")
        icloud = f"iCloud {entry.icloud_calendar}" if entry.icloud_calendar else None
        where = " → ".join(part for part in (entry.calendar, icloud) if part)
        print(f"{entry.id:>6}  {when}  {entry.decision.value:<20} {entry.uid}  {where}")
        print(f"        {entry.reason}")
    return 0
