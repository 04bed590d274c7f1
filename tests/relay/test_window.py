"""The sync window as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.relay.window import SyncWindow, full_pull_due, in_window

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _event(start: str, rule: str = "") -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:w\r\nDTSTAMP:20260101T000000Z\r\n"
        f"DTSTART:{start}\r\nDURATION:PT1H\r\n{rule}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def test_window_bounds_and_icloud_limits() -> None:
    start, end = SyncWindow().bounds(NOW)
    assert (NOW - start).days == 90 and (end - NOW).days == 730
    with pytest.raises(ValueError, match="365 days back"):
        SyncWindow(past_days=400)
    with pytest.raises(ValueError, match="1825 days ahead"):
        SyncWindow(future_days=2000)


def test_in_window_counts_any_occurrence() -> None:
    start, end = SyncWindow().bounds(NOW)
    assert in_window(_event("20270101T100000Z"), start, end)
    assert not in_window(_event("20300101T100000Z"), start, end)
    assert not in_window(_event("20200101T100000Z"), start, end)
    # A weekly series that began years ago still has occurrences now.
    assert in_window(_event("20200101T100000Z", "RRULE:FREQ=WEEKLY\r\n"), start, end)
    assert not in_window(_event("20200101T100000Z", "RRULE:FREQ=WEEKLY;COUNT=3\r\n"), start, end)


def test_full_pull_due() -> None:
    assert full_pull_due(None, 100.0, 86400)
    assert not full_pull_due(100.0, 100.0 + 86399, 86400)
    assert full_pull_due(100.0, 100.0 + 86400, 86400)


def test_account_holds_only_grow() -> None:
    from proxy.relay.holds import AccountHolds, account_key

    holds = AccountHolds()
    key = account_key("https://caldav.icloud.com/", "Me@iCloud.com")
    assert key == account_key("https://CALDAV.icloud.com", "me@icloud.com")
    assert holds.until(key) == 0.0
    holds.hold(key, 10.0)
    holds.hold(key, 5.0)
    assert holds.until(key) == 10.0
