"""The JSON API and the free-busy REPORT over real HTTP, on a running calrelay (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar
import pytest
import requests
from aiohttp import web

from proxy.availability.routes import FRESHNESS, INDEX, USER_ADDRESSES, setup_routes
from proxy.availability.sources import SourceFreshness
from proxy.keys import ENGINE
from proxy.model import CALENDAR_KIND_PROP, MIRROR_ROLE_PROP
from tests.availability.conftest import vcalendar, vevent
from tests.conftest import Calrelay
from tests.helpers import mkcalendar, put

MIRROR = "/alice/icloud-work/"
LAST_PULL = datetime.now(UTC) - timedelta(hours=2)


def wire(freshness: Callable[[str], Mapping[str, SourceFreshness]] | None = None) -> Callable[[web.Application], None]:
    def customize(app: web.Application) -> None:
        if INDEX not in app:  # until the application factory calls it
            setup_routes(app)
        app[USER_ADDRESSES] = lambda user: [f"{user}@example.com"]
        if freshness is not None:
            app[FRESHNESS] = freshness
    return customize


@pytest.fixture
def server(calrelay_factory: Callable[..., Calrelay]) -> Calrelay:
    server = calrelay_factory(
        customize=wire(lambda user: {MIRROR: SourceFreshness(LAST_PULL, error="iCloud answered 503")}),
        overrides={"availability": {"timezone": "Europe/Paris", "stale_after": 600}},
    )
    auth = server.auth("alice")
    assert mkcalendar(server.url + "alice/work/", auth, "Work", "round-robin").status_code == 201
    objects = {
        "busy.ics": vevent("busy", "SUMMARY:Consultation", "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z"),
        "floating.ics": vevent("floating", "SUMMARY:Local", "X-CALRELAY-KIND:BLOCKED",
                               "DTSTART:20260302T140000", "DTEND:20260302T150000"),
        "free.ics": vevent("free", "SUMMARY:Reminder", "TRANSP:TRANSPARENT",
                           "DTSTART:20260302T090000Z", "DTEND:20260302T120000Z"),
        "declined.ics": vevent("declined", "SUMMARY:Declined", "ORGANIZER:mailto:bob@example.com",
                               "ATTENDEE;PARTSTAT=DECLINED:mailto:alice@example.com",
                               "DTSTART:20260302T110000Z", "DTEND:20260302T113000Z"),
        "weekly.ics": PARIS_WEEKLY,
    }
    for href, text in objects.items():
        body = text if text.startswith("BEGIN:VCALENDAR") else vcalendar(text)
        assert put(f"{server.url}alice/work/{href}", auth, body).status_code == 201, href
    make_mirror(server)
    return server


PARIS_WEEKLY = vcalendar(vevent(
    "weekly", "SUMMARY:Standup", "DTSTART;TZID=Europe/Paris:20260223T160000",
    "DTEND;TZID=Europe/Paris:20260223T163000", "RRULE:FREQ=WEEKLY;COUNT=4",
)).replace("BEGIN:VEVENT", "BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:STANDARD\r\nTZOFFSETFROM:+0100\r\n"
           "TZOFFSETTO:+0100\r\nDTSTART:19700101T000000\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT", 1)


def make_mirror(server: Calrelay) -> None:
    """A primary mirror as the relay would leave it: created outside a client request, then one pulled event."""
    engine = server.app[ENGINE]

    def create() -> None:
        with engine.storage.acquire_lock("w", "alice"):
            engine.storage.create_collection(
                MIRROR, props={"tag": "VCALENDAR", MIRROR_ROLE_PROP: "primary", CALENDAR_KIND_PROP: "service"}
            )

    server.run(engine.call(create))
    event = vevent("icloud-1", "SUMMARY:Dentist", "X-CALRELAY-KIND:BLOCKED", "X-CALRELAY-ORIGIN:ICLOUD",
                   "DTSTART:20260302T163000Z", "DTEND:20260302T170000Z")
    assert put(server.url + MIRROR.lstrip("/") + "dentist.ics", server.auth("alice"), vcalendar(event)).ok


def get(server: Calrelay, user: str, endpoint: str, as_user: str = "alice", **params: str) -> requests.Response:
    return requests.get(f"{server.url}api/v1/users/{user}/{endpoint}", params=params,
                        auth=server.auth(as_user), timeout=30)


DAY = {"start": "2026-03-02T00:00:00Z", "end": "2026-03-03T00:00:00Z"}


def spans(intervals: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(interval["start"], interval["end"]) for interval in intervals]


def test_availability_over_http(server: Calrelay) -> None:
    response = get(server, "alice", "availability", slot="60", **DAY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["timezone"] == "Europe/Paris"
    assert spans(body["busy"]) == [
        ("2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z"),
        ("2026-03-02T13:00:00Z", "2026-03-02T14:00:00Z"),  # floating 14:00 in Paris
        ("2026-03-02T15:00:00Z", "2026-03-02T15:30:00Z"),  # 16:00 Paris weekly
        ("2026-03-02T16:30:00Z", "2026-03-02T17:00:00Z"),  # the mirror's event
    ]
    assert [s["uid"] for s in body["busy"][1]["sources"]] == ["floating"]
    assert body["busy"][1]["sources"][0]["kind"] == "BLOCKED"
    mirror_source = body["busy"][3]["sources"][0]
    assert (mirror_source["calendar"], mirror_source["origin"], mirror_source["stale"]) == (MIRROR, "ICLOUD", True)
    assert [event["uid"] for event in body["free_events"]] == ["free"]
    assert {"start": "2026-03-02T10:00:00Z", "end": "2026-03-02T11:00:00Z"} in body["free_slots"]
    assert {"start": "2026-03-02T11:00:00Z", "end": "2026-03-02T12:00:00Z"} in body["free_slots"]  # declined
    assert all(slot["start"] != "2026-03-02T09:00:00Z" for slot in body["free_slots"])
    sources = {source["calendar"]: source for source in body["sources"]}
    assert sources["/alice/work/"] | {"unreadable_items": {}} == {
        "calendar": "/alice/work/", "role": "booking", "mirror_role": None, "calendar_kind": "round-robin",
        "last_success": None, "stale": False, "error": None, "policies": None, "beyond_sync_window": False,
        "unreadable_items": {},
    }
    assert sources[MIRROR]["stale"] and sources[MIRROR]["error"] == "iCloud answered 503"
    assert sources[MIRROR]["last_success"] == LAST_PULL.isoformat().replace("+00:00", "Z")
    assert body["stale_sources"] == [MIRROR] and body["complete"] is False


def test_busy_reasons_over_http(server: Calrelay) -> None:
    body = get(server, "alice", "busy-reasons", at="2026-03-02T09:30:00Z").json()
    assert body["busy"] is True
    assert [(r["uid"], r["disposition"], r["calendar"]) for r in body["reasons"]] == [
        ("busy", "busy", "/alice/work/"), ("free", "free", "/alice/work/"),
    ]
    body = get(server, "alice", "busy-reasons", at="2026-03-02T11:15:00Z").json()
    assert body["busy"] is False
    assert [(r["uid"], r["disposition"]) for r in body["reasons"]] == [("free", "free"), ("declined", "declined")]
    body = get(server, "alice", "busy-reasons", at="2026-03-02T17:45:00+01:00").json()
    assert body["busy"] is True
    (reason,) = body["reasons"]
    assert (reason["uid"], reason["origin"], reason["kind"], reason["stale"]) == ("icloud-1", "ICLOUD", "BLOCKED", True)
    assert body["stale_sources"] == [MIRROR]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"end": "2026-03-03T00:00:00Z"}, "missing start"),
        ({"start": "yesterday", "end": "2026-03-03T00:00:00Z"}, "not an ISO 8601"),
        ({"start": "2026-03-03T00:00:00Z", "end": "2026-03-03T00:00:00Z"}, "end must be after start"),
        ({"start": "2026-01-01", "end": "2027-06-01"}, "longer than 366 days"),
        ({**DAY, "slot": "0"}, "slot must be between"),
        ({**DAY, "slot": "half"}, "whole number of minutes"),
    ],
)
def test_bad_parameters_are_400_with_a_reason(server: Calrelay, params: dict[str, str], fragment: str) -> None:
    response = get(server, "alice", "availability", **params)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def test_busy_reasons_needs_an_instant(server: Calrelay) -> None:
    response = get(server, "alice", "busy-reasons")
    assert response.status_code == 400 and "missing at" in response.json()["error"]["message"]


def test_only_oneself_or_a_service_account(server: Calrelay) -> None:
    assert get(server, "alice", "availability", as_user="bob", **DAY).status_code == 403
    assert get(server, "alice", "busy-reasons", as_user="bob", at="2026-03-02T09:30:00Z").status_code == 403
    assert get(server, "alice", "availability", as_user="crm", **DAY).status_code == 200
    assert requests.get(f"{server.url}api/v1/users/alice/availability", params=DAY, timeout=10).status_code == 401


def freebusy_periods(server: Calrelay, path: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    client = server.client("alice")
    freebusy = client.calendar(url=server.url + path.lstrip("/")).freebusy_request(start, end)
    parsed = icalendar.Calendar.from_ical(freebusy.data)
    periods = []
    for component in parsed.walk("VFREEBUSY"):
        values = component.get("FREEBUSY", [])
        for value in values if isinstance(values, list) else [values]:
            for period in value.dt if isinstance(value.dt, list) else [value.dt]:
                periods.append((period[0].astimezone(UTC), period[1].astimezone(UTC)))
    return periods


def merge(periods: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(periods):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def test_free_busy_report_agrees_with_the_api(server: Calrelay) -> None:
    start, end = datetime(2026, 2, 20, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC)
    # Radicale's own report would read the floating event as UTC and count the declined one as busy.
    work = freebusy_periods(server, "/alice/work/", start, end)
    mirror = freebusy_periods(server, MIRROR, start, end)
    assert mirror == [(datetime(2026, 3, 2, 16, 30, tzinfo=UTC), datetime(2026, 3, 2, 17, tzinfo=UTC))]
    body = get(server, "alice", "availability", start=start.isoformat(), end=end.isoformat()).json()
    api = [(datetime.fromisoformat(b["start"]), datetime.fromisoformat(b["end"])) for b in body["busy"]]
    assert merge(work + mirror) == api
    assert len(api) == 7  # 4 weekly standups, the appointment, the floating block, the mirror event


def test_free_busy_report_marks_a_stale_mirror(server: Calrelay) -> None:
    freebusy = server.client("alice").calendar(url=server.url + MIRROR.lstrip("/")).freebusy_request(
        datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    )
    assert "X-CALRELAY-STALE:TRUE" in freebusy.data


def test_a_restarted_server_answers_from_the_index_at_once(tmp_path) -> None:
    """Nothing to warm up: the first query after a restart reads the instance index and parses no event."""
    from tests.conftest import running_calrelay

    overrides = {"availability": {"timezone": "Europe/Paris"}}
    with running_calrelay(tmp_path, overrides=overrides, customize=wire()) as first:
        auth = first.auth("alice")
        assert mkcalendar(first.url + "alice/work/", auth, "Work", "round-robin").status_code == 201
        for href, text in [("weekly.ics", PARIS_WEEKLY), ("floating.ics", vcalendar(vevent(
                "floating", "DTSTART:20260302T140000", "DTEND:20260302T150000")))]:
            assert put(f"{first.url}alice/work/{href}", auth, text).status_code == 201
        before = get(first, "alice", "availability", **DAY).json()["busy"]
    with running_calrelay(tmp_path, overrides=overrides, customize=wire()) as second:
        after = get(second, "alice", "availability", **DAY).json()["busy"]
        index = second.app[INDEX]
        assert (index.parsed_items, index.rows_read > 0) == (0, True)
    assert spans(after) == spans(before) == [("2026-03-02T13:00:00Z", "2026-03-02T14:00:00Z"),
                                            ("2026-03-02T15:00:00Z", "2026-03-02T15:30:00Z")]
