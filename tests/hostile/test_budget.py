"""The per-request expansion budget: past its instances or its wall-clock time, availability and free-busy
answer 422 with what to change; a shorter window still answers, and the expanded buckets are kept."""

from __future__ import annotations

import pytest
import requests

from tests.helpers import mkcalendar, put

YEAR = "start=2026-12-01T00:00:00Z&end=2027-11-30T00:00:00Z"
DAY = "start=2026-12-02T00:00:00Z&end=2026-12-03T00:00:00Z"


def hourly(uid: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20261201T000000Z\r\nDTEND:20261201T000500Z\r\n"
        "RRULE:FREQ=HOURLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


@pytest.mark.parametrize("limits", [{"request_instances": 5000}, {"request_seconds": 1e-6}])
def test_over_budget_is_422_and_a_short_window_still_answers(calrelay_factory, limits):
    server = calrelay_factory(overrides={"limits": limits})
    alice = server.auth("alice")
    assert mkcalendar(server.url + "alice/sales/", alice, "Sales", kind="round-robin").status_code == 201
    for number in range(10):  # each accepted: 672 instances per 28 days, under the per-event cap
        assert put(f"{server.url}alice/sales/h{number}.ics", alice, hourly(f"h{number}")).status_code == 201
    year = requests.get(f"{server.url}api/v1/users/alice/availability?{YEAR}", auth=alice, timeout=30)
    assert year.status_code == 422, year.text
    message = year.json()["error"]["message"]
    assert "limits.request_" in message and "shorter window" in message
    freebusy = requests.request(
        "REPORT", server.url + "alice/sales/", auth=alice, timeout=30,
        headers={"Content-Type": "application/xml", "Depth": "1"},
        data='<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
        '<C:time-range start="20261201T000000Z" end="20271130T000000Z"/></C:free-busy-query>',
    )
    assert freebusy.status_code == 422 and "shorter window" in freebusy.text
    # What a request expanded is kept, so asking again makes progress even on the tightest budget.
    for _ in range(100):
        day = requests.get(f"{server.url}api/v1/users/alice/availability?{DAY}", auth=alice, timeout=30)
        if day.status_code != 422:
            break
    assert day.status_code == 200, day.text
    assert len(day.json()["busy"]) == 24
