"""What blocks availability, per link policy, end to end: iCloud events in the conflict calendar, busy time
checked against intervals written out by hand."""

from __future__ import annotations

import pytest
import requests

from tests.relay.conftest import make_linked
from tests.relay.test_pull import icloud_put, mirror, pulled

OVERRIDES = {"upstream": {"poll_interval": 1.0, "min_backoff": 0.2, "max_backoff": 2.0}}
WINDOW = {"start": "2027-04-05T00:00:00Z", "end": "2027-04-08T00:00:00Z"}


def _calendar(uid: str, lines: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Apple Inc.//iOS 18//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20270101T000000Z\r\nSUMMARY:{uid}\r\n{lines}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


EVENTS = {
    # Apple creates all-day events as FREE (TRANSPARENT).
    "holiday": "DTSTART;VALUE=DATE:20270406\r\nDTEND;VALUE=DATE:20270407\r\nTRANSP:TRANSPARENT\r\n",
    "offsite": "DTSTART;VALUE=DATE:20270407\r\nDTEND;VALUE=DATE:20270408\r\nTRANSP:OPAQUE\r\n",
    "dentist": "DTSTART:20270405T140000Z\r\nDTEND:20270405T150000Z\r\nX-APPLE-TRAVEL-DURATION;VALUE=DURATION:PT30M\r\n",
    "invite": "DTSTART:20270405T170000Z\r\nDTEND:20270405T180000Z\r\nORGANIZER:mailto:boss@work.test\r\n"
    "ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:demo@icloud.test\r\n",
}
CASES = [
    (
        {},  # the defaults: all-day as marked, travel time busy, unanswered invitations busy
        [("2027-04-05T13:30:00Z", "2027-04-05T15:00:00Z"), ("2027-04-05T17:00:00Z", "2027-04-05T18:00:00Z"),
         ("2027-04-07T00:00:00Z", "2027-04-08T00:00:00Z")],
        {"2027-04-05T13:45:00Z": "travel-time", "2027-04-05T17:30:00Z": "unanswered=busy"},
    ),
    (
        {"all_day": "always-busy", "travel_time_busy": False, "unanswered": "free"},
        [("2027-04-05T14:00:00Z", "2027-04-05T15:00:00Z"), ("2027-04-06T00:00:00Z", "2027-04-08T00:00:00Z")],
        {"2027-04-06T12:00:00Z": "all-day=always-busy", "2027-04-05T17:30:00Z": "unanswered=free"},
    ),
    (
        {"all_day": "never-busy"},
        [("2027-04-05T13:30:00Z", "2027-04-05T15:00:00Z"), ("2027-04-05T17:00:00Z", "2027-04-05T18:00:00Z")],
        {"2027-04-07T12:00:00Z": "all-day=never-busy"},
    ),
]


@pytest.mark.parametrize(("policies", "busy", "reasons"), CASES, ids=["defaults", "always-busy", "never-busy"])
def test_availability_policies(calrelay_factory, policies, busy, reasons):
    linked = make_linked(calrelay_factory(overrides=OVERRIDES), policies=policies)
    for uid, lines in EVENTS.items():
        icloud_put(linked, "home", f"{uid}.ics", _calendar(uid, lines))
    pulled(linked, lambda: len(mirror(linked, "icloud-home")) == len(EVENTS), "the four events mirrored")
    auth = linked.relay.auth("crm")
    answer = requests.get(linked.url + "api/v1/users/alice/availability", params=WINDOW, auth=auth, timeout=10)
    assert answer.status_code == 200, answer.text
    assert [(b["start"], b["end"]) for b in answer.json()["busy"]] == busy
    for at, policy in reasons.items():
        found = requests.get(linked.url + "api/v1/users/alice/busy-reasons", params={"at": at}, auth=auth,
                             timeout=10).json()
        assert [r["policy"] for r in found["reasons"]] == [policy], found
