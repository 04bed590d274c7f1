"""A runaway rule coming from iCloud: the relay's sync-window check does not expand it, the store refuses it with
its reason, and the pull goes on with the other events (issue 13: bounded expansion on every path)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import pytest

from proxy.config import LimitsSettings
from proxy.relay.window import in_window
from tests.helpers import event
from tests.relay.conftest import make_linked, wait_until
from tests.relay.test_pull import START, icloud_put, mirror

WINDOW = datetime(2026, 9, 1, tzinfo=UTC), datetime(2028, 12, 1, tzinfo=UTC)
HOURS = ",".join(str(h) for h in range(24))
MINUTES = ",".join(str(m) for m in range(0, 60, 5))


def icloud_event(uid: str, dtstart: str, rule: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile iCloud//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{dtstart}\r\nDURATION:PT1S\r\n"
        f"SUMMARY:Runaway\r\nRRULE:{rule}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


@pytest.mark.parametrize("rule", [
    "FREQ=SECONDLY", "FREQ=MINUTELY", "FREQ=SECONDLY;INTERVAL=7", "FREQ=DAILY;COUNT=1000000000",
    f"FREQ=DAILY;BYHOUR={HOURS};BYMINUTE={MINUTES}",
])
@pytest.mark.parametrize("dtstart", ["19700101T000000Z", "20260101T000000Z", "20290101T000000Z"])
def test_a_rule_the_store_refuses_is_not_expanded(rule, dtstart):
    started = time.monotonic()
    assert in_window(icloud_event("r", dtstart, rule), *WINDOW, LimitsSettings())
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(("dtstart", "rule", "inside"), [
    ("20260101T090000Z", "FREQ=HOURLY", True),
    ("19700101T090000Z", "FREQ=WEEKLY", True),
    ("19700101T090000Z", "FREQ=WEEKLY;UNTIL=19800101T000000Z", False),
    ("20300101T090000Z", "FREQ=HOURLY", False),
    ("20280601T090000Z", "FREQ=YEARLY;COUNT=2", True),
])
def test_ordinary_rules_are_placed_by_their_first_occurrence(dtstart, rule, inside):
    assert in_window(icloud_event("o", dtstart, rule), *WINDOW, LimitsSettings()) is inside


def test_a_runaway_icloud_event_is_refused_and_the_rest_imported(calrelay_factory, caplog):
    caplog.set_level(logging.WARNING, logger="proxy.relay")
    linked = make_linked(calrelay_factory(overrides={"upstream": {"poll_interval": 1.0, "min_backoff": 0.2,
                                                                  "max_backoff": 2.0}}))
    icloud_put(linked, "work", "runaway.ics", icloud_event("runaway", "20260101T000000Z", "FREQ=SECONDLY"))
    icloud_put(linked, "work", "lunch.ics", event("lunch", START, kind=None))

    def imported():
        linked.sync_now()
        return "lunch" in mirror(linked)

    wait_until(imported, timeout=60, message="the ordinary iCloud event is imported")
    assert "runaway" not in mirror(linked)
    refusals = [r.getMessage() for r in caplog.records if "not imported" in r.getMessage()]
    assert any("FREQ=SECONDLY" in line and "limits.min_frequency" in line for line in refusals), refusals
