"""The sync window (pure): which iCloud events the relay imports, and when it lists a calendar whole again.

Pulls import events with an occurrence between ``past_days`` back and ``future_days`` ahead (default 90 days
and 2 years: inside iCloud's query limits of 365 days back and 5 years ahead, so a window-bound query would
never be refused). Events already imported are always followed, wherever they move. An event outside the
window is listed but not imported; since a sync token reports it again only when it changes, a full listing
once per ``full_pull_interval`` (a day) catches events that time has brought into the window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import recurring_ical_events
from icalendar import Calendar

log = logging.getLogger(__name__)

#: iCloud's limits (CalendarServer heritage, docs/emulator.md): a window never reaches beyond them
ICLOUD_MAX_PAST_DAYS = 365
ICLOUD_MAX_FUTURE_DAYS = 5 * 365


@dataclass(frozen=True)
class SyncWindow:
    past_days: int = 90
    future_days: int = 730

    def __post_init__(self) -> None:
        if not 0 < self.past_days <= ICLOUD_MAX_PAST_DAYS:
            raise ValueError(f"the sync window reaches 1 to {ICLOUD_MAX_PAST_DAYS} days back (iCloud's limit)")
        if not 0 < self.future_days <= ICLOUD_MAX_FUTURE_DAYS:
            raise ValueError(f"the sync window reaches 1 to {ICLOUD_MAX_FUTURE_DAYS} days ahead (iCloud's limit)")

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        return now - timedelta(days=self.past_days), now + timedelta(days=self.future_days)


def in_window(text: str | Calendar, start: datetime, end: datetime) -> bool:
    """Whether the event object (its text, or parsed) has an occurrence overlapping [start, end). Unreadable
    recurrences count as inside: an event must not be lost because its rule could not be expanded."""
    try:
        calendar = Calendar.from_ical(text) if isinstance(text, str) else text
        return bool(recurring_ical_events.of(calendar).between(start.astimezone(UTC), end.astimezone(UTC)))
    except (ValueError, TypeError, KeyError) as error:
        log.warning("could not place an iCloud event in the sync window (imported anyway): %s", error)
        return True


def full_pull_due(last_full: float | None, now: float, interval: float) -> bool:
    """Whether a calendar should be listed whole (no sync token) now."""
    return last_full is None or now - last_full >= interval
