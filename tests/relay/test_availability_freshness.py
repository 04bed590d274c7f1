"""Availability with a failing iCloud: the mirror is reported stale and its busy time is kept (issue 7)."""

from __future__ import annotations

from datetime import UTC, datetime

import requests

from tests.helpers import event
from tests.relay.conftest import make_linked, wait_until
from tests.relay.test_pull import icloud_put, mirror, pulled

START = datetime(2027, 4, 5, 14, 0, tzinfo=UTC)
WINDOW = {"start": "2027-04-05T00:00:00Z", "end": "2027-04-06T00:00:00Z"}


def availability(linked) -> dict:
    response = requests.get(linked.url + "api/v1/users/alice/availability", params=WINDOW,
                            auth=linked.relay.auth("crm"), timeout=10)
    response.raise_for_status()
    return response.json()


def test_throttled_icloud_makes_the_mirror_stale_but_keeps_its_busy_time(calrelay_factory):
    relay = calrelay_factory(overrides={"upstream": {"poll_interval": 1.0, "min_backoff": 0.5, "max_backoff": 1.0},
                                        "availability": {"stale_after": 2.0}})
    linked = make_linked(relay)
    icloud_put(linked, "work", "dentist.ics", event("dentist", START, minutes=60, summary="Dentist"))
    pulled(linked, lambda: "dentist" in mirror(linked), "imported")
    fresh = availability(linked)
    assert fresh["complete"] is True and fresh["stale_sources"] == []
    assert [b["start"] for b in fresh["busy"]] == ["2027-04-05T14:00:00Z"]

    linked.emulator.set_faults(throttle_seconds=120, retry_after=1)
    # The mirror of work (home's may turn stale first: the throttle can start between the two calendars' pulls).
    stale = wait_until(lambda: "/alice/icloud-work/" in (a := availability(linked))["stale_sources"] and a,
                       timeout=30, message="the mirror turns stale")
    assert "/alice/icloud-work/" in stale["stale_sources"] and stale["complete"] is False
    assert [b["start"] for b in stale["busy"]] == ["2027-04-05T14:00:00Z"]  # never "free" by failure
    source = next(s for s in stale["sources"] if s["calendar"] == "/alice/icloud-work/")
    assert source["stale"] and source["last_success"] is not None and "throttl" in (source["error"] or "")
    reasons = requests.get(linked.url + "api/v1/users/alice/busy-reasons", params={"at": "2027-04-05T14:30:00Z"},
                           auth=linked.relay.auth("crm"), timeout=10).json()
    assert reasons["busy"] and reasons["reasons"][0]["stale"] is True

    linked.emulator.clear_faults()
    linked.sync_now()
    wait_until(lambda: availability(linked)["complete"], timeout=30, message="fresh again after iCloud recovers")
