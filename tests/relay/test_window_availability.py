"""Availability answers say when they reach beyond the relay's sync window, where the mirrors cannot know
iCloud's events (docs/availability.md, "beyond_sync_window")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import requests

from tests.relay.conftest import Linked


def _answer(linked: Linked, start: datetime, end: datetime) -> dict:
    params = {"start": start.isoformat().replace("+00:00", "Z"), "end": end.isoformat().replace("+00:00", "Z")}
    response = requests.get(linked.url + "api/v1/users/alice/availability", params=params,
                            auth=linked.relay.auth("crm"), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_answer_beyond_the_sync_window_is_not_complete(linked):
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    inside = _answer(linked, today, today + timedelta(days=7))
    assert inside["complete"] is True
    assert not any(source["beyond_sync_window"] for source in inside["sources"])
    # Two years ahead is the default window's end (730 days): a week past it, iCloud's events are not mirrored.
    later = _answer(linked, today + timedelta(days=735), today + timedelta(days=742))
    beyond = {source["calendar"]: source["beyond_sync_window"] for source in later["sources"]}
    assert beyond["/alice/icloud-work/"] and beyond["/alice/icloud-home/"]
    assert not beyond["/alice/sales/"]  # a booking calendar is all here, whatever the window
    assert later["complete"] is False and later["stale_sources"] == []
    earlier = _answer(linked, today - timedelta(days=100), today - timedelta(days=93))  # the window: 90 days back
    assert earlier["complete"] is False
