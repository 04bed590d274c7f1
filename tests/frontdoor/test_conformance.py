"""Conformance: caldav-server-tester rates calrelay above a plain Radicale 3.9.

A standalone Radicale 3.9 gets 86 of 101 features "full" from caldav-server-tester 1.7 (measured with
``caldav-server-tester --verbose`` against ``python -m radicale`` with ``auth type = none``); calrelay's
embedded engine behind the front door got 88. The interop features (docs/interop.md) add six more: principal
search (three features), ``DAV:limit`` on sync-collection (two) and prop-filters without a component type.
Every feature that was full before must stay full, and the count must not drop below the figure measured.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

PLAIN_RADICALE_FULL = 86
#: What calrelay reached with the interop features (94 of 101 measured; the issue asks for at least 93).
CALRELAY_FULL = 94

#: Fully supported by calrelay before the interop features (Radicale's engine behind the front door).
ENGINE_FEATURES = frozenset({
    "auth.www-authenticate", "auth.www-authenticate.usable-scheme", "calendar-color", "calendar-color.name",
    "calendar-order", "create-calendar", "create-calendar.set-displayname", "create-calendar.stable-url",
    "create-calendar.with-supported-component-types", "delete-calendar", "delete-calendar.free-namespace",
    "freebusy-query", "get-current-user-principal", "non-existing-raises-not-found.collection",
    "non-existing-raises-not-found.object", "propfind", "propfind.allprop", "propfind.allprop.resourcetype",
    "propfind.displayname", "propfind.principal-depth-1", "save-load.event", "save-load.event.no-dtend",
    "save-load.event.no-summary", "save-load.event.recurrences", "save-load.event.recurrences.count",
    "save-load.event.recurrences.exception", "save-load.event.recurrences.exception.cancelled",
    "save-load.event.recurrences.exception.reschedule", "save-load.event.timezone", "save-load.get-by-url",
    "save-load.icalendar.related-to", "save-load.journal", "save-load.journal.mixed-calendar", "save-load.mutable",
    "save-load.mutable.attendee-partstat", "save-load.mutable.if-match-optional",
    "save-load.mutable.if-match-wildcard", "save-load.stable-url", "save-load.todo",
    "save-load.todo.mixed-calendar", "save-load.todo.recurrences", "save-load.todo.recurrences.count",
    "save-load.todo.uncomplete", "save.duplicate-event", "save.duplicate-uid.cross-calendar", "save.etag",
    "save.if-none-match", "save.no-uid-conflict", "search.combined-is-logical-and", "search.comp-type",
    "search.comp-type.optional", "search.is-not-defined", "search.is-not-defined.category",
    "search.is-not-defined.class", "search.is-not-defined.dtend", "search.recurrences.expanded.event",
    "search.recurrences.expanded.exception", "search.recurrences.includes-implicit.event",
    "search.recurrences.includes-implicit.infinite-scope", "search.recurrences.includes-implicit.todo",
    "search.recurrences.includes-implicit.todo.pending", "search.text.case-insensitive",
    "search.text.case-sensitive", "search.text.category", "search.text.substring", "search.time-range.alarm",
    "search.time-range.comp-type-optional", "search.time-range.event", "search.time-range.event.old-dates",
    "search.time-range.open.end", "search.time-range.open.start", "search.time-range.open.start.duration",
    "search.time-range.todo", "search.time-range.todo.no-dtstart", "search.time-range.todo.no-dtstart.no-due",
    "search.time-range.todo.old-dates", "search.time-range.todo.strict", "search.unlimited-time-range",
    "sync-token", "sync-token.delete", "sync-token.invalid-token", "synchronous-write",
    "synchronous-write.create-calendar", "synchronous-write.delete-calendar", "synchronous-write.proppatch",
    "url.encode-at.encoded", "url.encode-at.literal.collection", "url.encode-at.literal.object",
})
#: Added by proxy.interop.
INTEROP_FEATURES = frozenset({
    "principal-search", "principal-search.by-name.self", "principal-search.list-all",
    "search.text.comp-type-optional", "sync-token.limit", "sync-token.limit.initial-sync",
})


def run_caldav_server_tester(calrelay) -> dict[str, str]:
    tester = shutil.which("caldav-server-tester") or str(Path(sys.executable).parent / "caldav-server-tester")
    result = subprocess.run(
        [tester, "--verbose", "--caldav-url", calrelay.url, "--caldav-username", "alice",
         "--caldav-password", calrelay.password("alice")],
        capture_output=True, text=True, timeout=300,
    )
    levels = dict(re.findall(r"^## (\S+)\nFeature support level found: (\S+)", result.stdout, re.MULTILINE))
    assert len(levels) >= 100, result.stdout[-2000:] + result.stderr[-2000:]
    return levels


def test_caldav_server_tester_finds_more_than_plain_radicale(calrelay):
    levels = run_caldav_server_tester(calrelay)
    full = {name for name, level in levels.items() if level == "full"}
    lost = sorted((ENGINE_FEATURES | INTEROP_FEATURES) - full)
    assert not lost, f"no longer fully supported: {lost}\n" + "\n".join(f"{n}: {lv}" for n, lv in levels.items())
    assert len(full) >= CALRELAY_FULL > PLAIN_RADICALE_FULL, f"only {len(full)} of {len(levels)} features full"
