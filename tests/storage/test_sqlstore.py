"""The SQL storage over real HTTP: incremental sync and token expiry, time-range queries through the
instance index against an independent expansion, and the schema version check."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import defusedxml.ElementTree as ET
import icalendar
import pytest
import recurring_ical_events
import requests
import sqlalchemy as sa

from proxy import database, schema
from tests.helpers import event, mkcalendar, put

DAV = "{DAV:}"
START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def report(url: str, auth: tuple[str, str], body: str) -> requests.Response:
    return requests.request("REPORT", url, auth=auth, timeout=30, data=body.encode(),
                            headers={"Content-Type": "application/xml; charset=utf-8", "Depth": "1"})


def sync(url: str, auth: tuple[str, str], token: str = "") -> tuple[str, dict[str, int]]:
    """(new token, href -> 200 or 404) of a sync-collection REPORT."""
    response = report(url, auth, (
        '<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:">'
        f"<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>"
        "<D:prop><D:getetag/></D:prop></D:sync-collection>"))
    assert response.status_code == 207, response.text
    root = ET.fromstring(response.content)
    changes = {}
    for answer in root.iter(f"{DAV}response"):
        href = answer.findtext(f"{DAV}href") or ""
        status = answer.findtext(f"{DAV}status") or answer.findtext(f".//{DAV}status") or ""
        changes[href.rsplit("/", 1)[-1]] = 404 if "404" in status else 200
    return root.findtext(f"{DAV}sync-token") or "", changes


@pytest.fixture
def calendar(calrelay):
    url = f"{calrelay.url.rstrip('/')}/alice/sales/"
    assert mkcalendar(url, calrelay.auth("alice"), "Sales").status_code == 201
    return url


def test_incremental_sync_lists_exactly_the_changes_and_tombstones(calrelay, calendar) -> None:
    auth = calrelay.auth("alice")
    for n in range(5):
        assert put(f"{calendar}e{n}.ics", auth, event(f"e{n}", START + timedelta(hours=n))).status_code == 201
    token, everything = sync(calendar, auth)
    assert everything == {f"e{n}.ics": 200 for n in range(5)}
    assert sync(calendar, auth, token)[1] == {}
    assert put(f"{calendar}e1.ics", auth, event("e1", START, summary="moved")).status_code == 204
    assert requests.delete(f"{calendar}e2.ics", auth=auth, timeout=10).status_code == 200
    assert put(f"{calendar}e9.ics", auth, event("e9", START)).status_code == 201
    newer, changes = sync(calendar, auth, token)
    assert changes == {"e1.ics": 200, "e2.ics": 404, "e9.ics": 200}
    assert sync(calendar, auth, newer)[1] == {}
    # The old token still works after more changes: it names a revision, not a state.
    assert set(sync(calendar, auth, token)[1]) == {"e1.ics", "e2.ics", "e9.ics"}


@pytest.mark.parametrize("mangle", [
    lambda token: re.sub(r"-(\d+)$", lambda m: f"-{int(m.group(1)) - 31 * 86400}", token),  # 31 days old
    lambda token: re.sub(r"/(\d+)-", lambda m: f"/{int(m.group(1)) + 1}-", token),  # another collection
    lambda token: re.sub(r"-(\d+)-", lambda m: f"-{int(m.group(1)) + 5}-", token),  # from the future
    lambda token: token + "x",
], ids=["expired", "other collection", "future revision", "malformed"])
def test_unusable_sync_tokens_get_a_clean_valid_sync_token_403(calrelay, calendar, mangle) -> None:
    auth = calrelay.auth("alice")
    assert put(f"{calendar}a.ics", auth, event("a", START)).status_code == 201
    token, _ = sync(calendar, auth)
    response = report(calendar, auth, (
        '<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:">'
        f"<D:sync-token>{mangle(token)}</D:sync-token><D:sync-level>1</D:sync-level>"
        "<D:prop><D:getetag/></D:prop></D:sync-collection>"))
    assert response.status_code == 403
    assert "valid-sync-token" in response.text


def test_tombstones_older_than_the_token_age_expire_the_tokens_before_them(calrelay, calendar) -> None:
    auth = calrelay.auth("alice")
    for name in ("a", "b"):
        assert put(f"{calendar}{name}.ics", auth, event(name, START)).status_code == 201
    token, _ = sync(calendar, auth)
    assert requests.delete(f"{calendar}a.ics", auth=auth, timeout=10).status_code == 200
    engine = database.create_engine(calrelay.settings.database_url)
    try:
        with database.writing(engine) as connection:  # the deletion happened 31 days ago
            connection.execute(sa.text("UPDATE dav_changes SET changed = changed - :age WHERE deleted"),
                               {"age": 31 * 86400})
    finally:
        engine.dispose()
    assert requests.delete(f"{calendar}b.ics", auth=auth, timeout=10).status_code == 200  # prunes "a"
    response = report(calendar, auth, (
        '<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:">'
        f"<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>"
        "<D:prop><D:getetag/></D:prop></D:sync-collection>"))
    assert response.status_code == 403 and "valid-sync-token" in response.text
    assert sync(calendar, auth)[1] == {}


# -- time-range queries through the instance index --------------------------------------------------

def vcalendar(body: str) -> str:
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n{body}END:VCALENDAR\r\n"


BERLIN = (
    "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n"
    "DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\nBEGIN:STANDARD\r\n"
    "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nDTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n"
    "END:STANDARD\r\nEND:VTIMEZONE\r\n"
)


def vevent(uid: str, lines: str) -> str:
    return f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\n{lines}END:VEVENT\r\n"


OBJECTS = {
    "single": vcalendar(vevent("single", "DTSTART:20261208T100000Z\r\nDTEND:20261208T110000Z\r\n")),
    "weekly": vcalendar(BERLIN + vevent(
        "weekly", "DTSTART;TZID=Europe/Berlin:20261102T090000\r\nDTEND;TZID=Europe/Berlin:20261102T100000\r\n"
        "RRULE:FREQ=WEEKLY;BYDAY=MO\r\nEXDATE;TZID=Europe/Berlin:20261207T090000\r\n")
        + vevent("weekly", "RECURRENCE-ID;TZID=Europe/Berlin:20261214T090000\r\n"
                 "DTSTART;TZID=Europe/Berlin:20261216T150000\r\nDTEND;TZID=Europe/Berlin:20261216T160000\r\n")),
    "all-day": vcalendar(vevent("all-day", "DTSTART;VALUE=DATE:20261209\r\nDTEND;VALUE=DATE:20261210\r\n")),
    "floating": vcalendar(vevent("floating", "DTSTART:20261210T230000\r\nDTEND:20261210T233000\r\n")),
    "monthly-old": vcalendar(vevent(
        "monthly-old", "DTSTART:20200105T080000Z\r\nDTEND:20200105T090000Z\r\nRRULE:FREQ=MONTHLY\r\n")),
    "daily": vcalendar(vevent(  # beyond the two-year horizon
        "daily", "DTSTART:20261101T070000Z\r\nDTEND:20261101T071500Z\r\nRRULE:FREQ=DAILY\r\n")),
    "hourly": vcalendar(vevent(  # more instances than the per-event cap
        "hourly", "DTSTART:20261201T070000Z\r\nDTEND:20261201T071500Z\r\nRRULE:FREQ=HOURLY;INTERVAL=5\r\n")),
    "yearly-far": vcalendar(vevent(  # beyond the two-year horizon too
        "yearly-far", "DTSTART:20261231T120000Z\r\nDTEND:20261231T130000Z\r\nRRULE:FREQ=YEARLY\r\n")),
    "ended": vcalendar(vevent(
        "ended", "DTSTART:20260105T080000Z\r\nDTEND:20260105T090000Z\r\nRRULE:FREQ=WEEKLY;COUNT=3\r\n")),
}

WINDOWS = [
    (datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 14, tzinfo=UTC)),
    (datetime(2026, 12, 14, tzinfo=UTC), datetime(2026, 12, 21, tzinfo=UTC)),
    (datetime(2026, 12, 11, 0, tzinfo=UTC), datetime(2026, 12, 11, 6, tzinfo=UTC)),
    (datetime(2026, 1, 12, tzinfo=UTC), datetime(2026, 1, 13, tzinfo=UTC)),
    (datetime(2031, 6, 1, tzinfo=UTC), datetime(2031, 6, 8, tzinfo=UTC)),
    (datetime(2035, 12, 30, tzinfo=UTC), datetime(2036, 1, 2, tzinfo=UTC)),
]


def expected(start: datetime, end: datetime) -> set[str]:
    """An independent expansion: which objects have an instance overlapping [start, end)."""
    found = set()
    for name, text in OBJECTS.items():
        if recurring_ical_events.of(icalendar.Calendar.from_ical(text)).between(start, end):
            found.add(name)
    return found


def instant_text(value) -> str:
    """An instance's start, comparable: a date as it is, a time in UTC (floating read as UTC)."""
    if not isinstance(value, datetime):
        return value.isoformat()
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()


def expected_starts(start: datetime, end: datetime) -> set[tuple[str, str]]:
    """An independent expansion: (object, instance start) of every instance overlapping [start, end)."""
    return {(name, instant_text(instance["DTSTART"].dt)) for name, text in OBJECTS.items()
            for instance in recurring_ical_events.of(icalendar.Calendar.from_ical(text)).between(start, end)}


def expanded_starts(response: requests.Response) -> set[tuple[str, str]]:
    """(object, instance start) of every VEVENT in the calendar-data of an expanding REPORT's answer."""
    found = set()
    for answer in ET.fromstring(response.content).iter(f"{DAV}response"):
        name = (answer.findtext(f"{DAV}href") or "").rsplit("/", 1)[-1].removesuffix(".ics")
        for data in answer.iter("{urn:ietf:params:xml:ns:caldav}calendar-data"):
            found |= {(name, instant_text(event["DTSTART"].dt))
                      for event in icalendar.Calendar.from_ical(data.text or "").walk("VEVENT")}
    return found


def test_time_range_queries_answer_as_an_independent_expansion(calrelay, calendar) -> None:
    auth = calrelay.auth("alice")
    for name, text in OBJECTS.items():
        assert put(f"{calendar}{name}.ics", auth, text).status_code == 201, name
    for (start, end), expand in itertools.product(WINDOWS, (False, True)):
        data = (f'<C:calendar-data><C:expand start="{start:%Y%m%dT%H%M%SZ}" end="{end:%Y%m%dT%H%M%SZ}"/>'
                "</C:calendar-data>" if expand else "")
        response = report(calendar, auth, (
            '<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            f'<D:prop>{data or "<D:getetag/>"}</D:prop><C:filter><C:comp-filter name="VCALENDAR">'
            '<C:comp-filter name="VEVENT">'
            f'<C:time-range start="{start:%Y%m%dT%H%M%SZ}" end="{end:%Y%m%dT%H%M%SZ}"/>'
            "</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"))
        assert response.status_code == 207, response.text
        got = {href.rsplit("/", 1)[-1].removesuffix(".ics")
               for href in (e.text or "" for e in ET.fromstring(response.content).iter(f"{DAV}href"))}
        assert got == expected(start, end), (start, end, expand)
        if expand:  # and every instance in the range, only those
            assert expanded_starts(response) == expected_starts(start, end), (start, end)


def test_a_floating_series_is_expanded_not_a_500(calrelay, calendar) -> None:
    """Radicale's own expansion raises on a series in floating time; calrelay reads its times as UTC."""
    auth = calrelay.auth("alice")
    text = vcalendar(vevent("floating-daily", "DTSTART:20261207T090000\r\nDTEND:20261207T093000\r\n"
                            "RRULE:FREQ=DAILY;COUNT=20\r\n"))
    assert put(f"{calendar}floating-daily.ics", auth, text).status_code == 201
    response = report(calendar, auth, (
        '<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        '<D:prop><C:calendar-data><C:expand start="20261207T000000Z" end="20261210T000000Z"/></C:calendar-data>'
        '</D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        '<C:time-range start="20261207T000000Z" end="20261210T000000Z"/>'
        "</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"))
    assert response.status_code == 207, response.text
    assert expanded_starts(response) == {("floating-daily", f"2026-12-0{day}T09:00:00+00:00") for day in (7, 8, 9)}


def test_the_instance_index_holds_only_the_capped_instances(calrelay, calendar) -> None:
    auth = calrelay.auth("alice")
    assert put(f"{calendar}hourly.ics", auth, OBJECTS["hourly"]).status_code == 201
    engine = database.create_engine(calrelay.settings.database_url)
    try:
        with database.reading(engine) as connection:
            count = connection.execute(sa.text("SELECT count(*) FROM dav_instances")).scalar()
    finally:
        engine.dispose()
    assert count == 1000


# -- schema versions -------------------------------------------------------------------------------

def calrelay_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=60)


def set_version(url: str, version: int) -> None:
    engine = database.create_engine(url)
    try:
        with database.writing(engine) as connection:
            connection.execute(schema.schema_version.update().values(version=version))
    finally:
        engine.dispose()


def test_db_upgrade_creates_the_schema_and_serve_refuses_other_versions(tmp_path) -> None:
    data = tmp_path / "data"
    created = calrelay_cli("db", "upgrade", "--data", str(data))
    assert created.returncode == 0 and f"created at version {schema.VERSION}" in created.stdout
    again = calrelay_cli("db", "upgrade", "--data", str(data))
    assert again.returncode == 0 and "already at version" in again.stdout
    assert calrelay_cli("db", "check", "--data", str(data)).returncode == 0
    url = database.default_url(data)

    set_version(url, schema.VERSION + 1)
    served = calrelay_cli("serve", "--data", str(data), "--port", "0")
    assert served.returncode == 2 and "newer than this calrelay" in served.stderr

    set_version(url, schema.VERSION - 1)
    served = calrelay_cli("serve", "--data", str(data), "--port", "0")
    assert served.returncode == 2 and "run `calrelay db upgrade`" in served.stderr
    assert calrelay_cli("db", "check", "--data", str(data)).returncode == 1


def test_a_time_range_query_reads_only_the_candidates(calrelay, calendar) -> None:
    """The storage hands Radicale only the objects that may meet the range, not the whole calendar."""
    import xml.etree.ElementTree as StdET

    from proxy.keys import ENGINE

    auth = calrelay.auth("alice")
    for name, text in OBJECTS.items():
        assert put(f"{calendar}{name}.ics", auth, text).status_code == 201, name
    start, end = WINDOWS[0]
    filters = [StdET.fromstring(
        '<C:filter xmlns:C="urn:ietf:params:xml:ns:caldav"><C:comp-filter name="VCALENDAR">'
        f'<C:comp-filter name="VEVENT"><C:time-range start="{start:%Y%m%dT%H%M%SZ}" end="{end:%Y%m%dT%H%M%SZ}"/>'
        "</C:comp-filter></C:comp-filter></C:filter>")]
    storage = calrelay.app[ENGINE].storage
    with storage.acquire_lock("r", "alice"):
        collection = next(iter(storage.discover("/alice/sales/")))
        candidates = {item.href.removesuffix(".ics") for item, _ in collection.get_filtered(filters)}
    # Exactly the answer: the old monthly, yearly and ended series meet the range by their bounds only.
    assert candidates == expected(start, end)
    assert {"monthly-old", "yearly-far"} <= set(OBJECTS) - candidates


EDGES = {
    **OBJECTS,
    "instant": vcalendar(vevent("instant", "DTSTART:20261208T100000Z\r\n")),  # no DTEND: one second
    "floating-instant": vcalendar(vevent("floating-instant", "DTSTART:20261208T120000\r\n")),
    "date-only": vcalendar(vevent("date-only", "DTSTART;VALUE=DATE:20261211\r\n")),  # no DTEND: one day
    "duration": vcalendar(vevent("duration", "DTSTART:20261209T230000Z\r\nDURATION:PT2H\r\n")),
    "floating-weekly": vcalendar(vevent(
        "floating-weekly", "DTSTART:20261101T233000\r\nDTEND:20261102T003000\r\nRRULE:FREQ=WEEKLY;COUNT=10\r\n")),
    "all-day-weekly": vcalendar(vevent(
        "all-day-weekly", "DTSTART;VALUE=DATE:20261103\r\nDTEND;VALUE=DATE:20261104\r\nRRULE:FREQ=WEEKLY\r\n")),
}


def edge_windows() -> list[tuple[datetime, datetime]]:
    """Windows that start or end exactly on, or a second around, the instants the objects use."""
    instants = [datetime(2026, 12, 8, 10, tzinfo=UTC), datetime(2026, 12, 8, 12, tzinfo=UTC),
                datetime(2026, 12, 11, tzinfo=UTC), datetime(2026, 12, 10, 1, tzinfo=UTC),
                datetime(2026, 12, 6, 23, 30, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC)]
    windows = list(WINDOWS)
    for instant, shift, length in itertools.product(instants, (-1, 0, 1), (1, 3600, 86400)):
        start = instant + timedelta(seconds=shift)
        windows += [(start, start + timedelta(seconds=length)), (start - timedelta(seconds=length), start)]
    return windows


def test_a_match_the_index_proves_is_one_radicale_would_find(calrelay, calendar) -> None:
    """Candidates come with ``matched=True`` (Radicale then skips its own test) only where Radicale's own
    time-range test agrees; and the candidates Radicale keeps are exactly the objects it would keep from the
    whole calendar."""
    import xml.etree.ElementTree as StdET

    from radicale.item import filter as radicale_filter

    from proxy.keys import ENGINE

    auth = calrelay.auth("alice")
    for name, text in EDGES.items():
        assert put(f"{calendar}{name}.ics", auth, text).status_code == 201, name
    storage = calrelay.app[ENGINE].storage
    proven = 0
    for start, end in edge_windows():
        filters = [StdET.fromstring(
            '<C:filter xmlns:C="urn:ietf:params:xml:ns:caldav"><C:comp-filter name="VCALENDAR">'
            f'<C:comp-filter name="VEVENT"><C:time-range start="{start:%Y%m%dT%H%M%SZ}" '
            f'end="{end:%Y%m%dT%H%M%SZ}"/></C:comp-filter></C:comp-filter></C:filter>')]

        def radicale_keeps(item, filters=filters) -> bool:
            return radicale_filter.comp_match(item, filters[0].find("./*"))

        with storage.acquire_lock("r", "alice"):
            collection = next(iter(storage.discover("/alice/sales/")))
            candidates = list(collection.get_filtered(filters))
            everything = list(collection.get_all())
        for item, matched in candidates:
            if matched:
                proven += 1
                assert radicale_keeps(item), (item.href, start, end)
        kept = {item.href for item, matched in candidates if matched or radicale_keeps(item)}
        assert kept == {item.href for item in everything if radicale_keeps(item)}, (start, end)
    assert proven > len(edge_windows())  # the proof is used, not only the fallback


def test_one_users_vtimezone_does_not_change_how_anothers_times_are_read(calrelay, calendar) -> None:
    """vobject would read every later "Europe/Berlin" by the first one it parsed (here bob's, without summer
    time); alice's own VTIMEZONE decides her times."""
    bob = calrelay.auth("bob")
    bobs = f"{calrelay.url.rstrip('/')}/bob/sales/"
    assert mkcalendar(bobs, bob, "Sales").status_code == 201
    winter_only = ("BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n"
                   "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n")
    times = "DTSTART;TZID=Europe/Berlin:20310602T090000\r\nDTEND;TZID=Europe/Berlin:20310602T100000\r\n"
    assert put(f"{bobs}winter.ics", bob, vcalendar(winter_only + vevent("winter", times))).status_code == 201
    alice = calrelay.auth("alice")
    assert put(f"{calendar}june.ics", alice, vcalendar(BERLIN + vevent("june", times))).status_code == 201
    window = '<C:time-range start="20310602T064500Z" end="20310602T071500Z"/>'
    body = ('<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            '<D:prop><C:calendar-data><C:expand start="20310601T000000Z" end="20310603T000000Z"/>'
            '</C:calendar-data></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
            f"{window}</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>")
    response = report(calendar, alice, body)
    assert response.status_code == 207, response.text
    assert expanded_starts(response) == {("june", "2031-06-02T07:00:00+00:00")}
