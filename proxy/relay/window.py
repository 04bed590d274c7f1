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
from datetime import UTC, date, datetime, timedelta

import recurring_ical_events
from icalendar import Calendar, Component

from proxy import validation
from proxy.config import LimitsSettings

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


def in_window(text: str | Calendar, start: datetime, end: datetime, limits: LimitsSettings | None = None,
              max_count: int = 20_000) -> bool:
    """Whether the event object (its text, or parsed) has an occurrence overlapping [start, end). Unreadable
    recurrences count as inside: an event must not be lost because its rule could not be expanded.

    Bounded whatever iCloud sends: a rule the store refuses (finer than ``limits.min_frequency``, an absurd
    COUNT, denser than ``limits.max_instances``) counts as inside without being expanded, so that the import
    reaches the store, which refuses it with its reason (logged); any other rule is followed only up to its
    first occurrence that ends after ``start``."""
    try:
        calendar = Calendar.from_ical(text) if isinstance(text, str) else text
        for event in calendar.walk("VEVENT"):
            if _refused_rule(event, limits or LimitsSettings(), max_count):
                return True
        first = next(iter(recurring_ical_events.of(calendar).after(start.astimezone(UTC))), None)
        return first is not None and _utc(first.decoded("DTSTART")) < end
    except (ValueError, TypeError, KeyError, OverflowError) as error:
        log.warning("could not place an iCloud event in the sync window (imported anyway): %s", error)
        return True


def _refused_rule(event: Component, limits: LimitsSettings, max_count: int) -> bool:
    rules = event.get("RRULE")
    if rules is None:
        return False
    dtstart = event.decoded("DTSTART")
    for rule in rules if isinstance(rules, list) else [rules]:
        if validation.rule_problem(rule.to_ical().decode(), dtstart, limits, max_count) is not None:
            return True
    return False


def _utc(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def full_pull_due(last_full: float | None, now: float, interval: float) -> bool:
    """Whether a calendar should be listed whole (no sync token) now."""
    return last_full is None or now - last_full >= interval
