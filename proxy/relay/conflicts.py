"""Which edit wins when the CRM and iCloud both changed the same appointment since the last sync (pure).

The rule (documented in docs/relay.md): in two-way mode the *later* edit wins, judged by each version's
LAST-MODIFIED (DTSTAMP when absent), and a tie goes to the CRM, the system of record for bookings. In
one-way mode the CRM version always wins (iCloud edits do not flow back, rule 9). Either way the losing
edit is logged as a conflict, never dropped silently.
"""

from __future__ import annotations

from datetime import UTC, datetime

import icalendar

from proxy.model import Origin


def edited_at(text: str) -> datetime | None:
    """When this version was last edited: the master VEVENT's LAST-MODIFIED, else its DTSTAMP (in UTC)."""
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except ValueError:
        return None
    events = [c for c in calendar.walk("VEVENT")]
    master = next((e for e in events if "RECURRENCE-ID" not in e), events[0] if events else None)
    if master is None:
        return None
    for name in ("LAST-MODIFIED", "DTSTAMP"):
        value = master.get(name)
        if value is not None and isinstance(value.dt, datetime):
            moment = value.dt
            return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def winner(crm_text: str, icloud_text: str, two_way: bool) -> Origin:
    """The side whose edit is kept when both changed."""
    if not two_way:
        return Origin.CRM
    crm_time, icloud_time = edited_at(crm_text), edited_at(icloud_text)
    if crm_time is not None and icloud_time is not None and icloud_time > crm_time:
        return Origin.ICLOUD
    return Origin.CRM
