"""The instance index keeps ahead of time: series that go on are re-expanded as the horizon moves
(plugins.sqlstore.horizon), by hand and by the server's background job."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from plugins.sqlstore import tables
from plugins.sqlstore.storage import DEFAULT_HORIZON
from proxy import database
from proxy.keys import ENGINE
from tests.conftest import running_calrelay
from tests.helpers import put
from tests.storage.test_sqlstore import OBJECTS, expected, report

DAY = 86400


def index_of(url: str) -> dict[str, tuple[int, int, int]]:
    """href -> (indexed_until, instance count, last instance start)."""
    engine = database.create_engine(url)
    try:
        with database.reading(engine) as connection:
            i, n = tables.items.c, tables.instances.c
            rows = connection.execute(
                sa.select(i.href, i.indexed_until, sa.func.count(n.start), sa.func.max(n.start))
                .select_from(tables.items.outerjoin(tables.instances, sa.and_(
                    n.collection_id == i.collection_id, n.href == i.href)))
                .group_by(i.href, i.indexed_until)).all()
    finally:
        engine.dispose()
    return {row[0].removesuffix(".ics"): (row[1], row[2], row[3] or 0) for row in rows}


def query(calendar: str, auth: tuple[str, str], start: datetime, end: datetime) -> set[str]:
    import defusedxml.ElementTree as ET

    response = report(calendar, auth, (
        '<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        '<D:prop><D:getetag/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        f'<C:time-range start="{start:%Y%m%dT%H%M%SZ}" end="{end:%Y%m%dT%H%M%SZ}"/>'
        "</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"))
    assert response.status_code == 207, response.text
    return {(e.text or "").rsplit("/", 1)[-1].removesuffix(".ics") for e in ET.fromstring(response.content).iter(
        "{DAV:}href")}


def test_extending_reindexes_the_series_that_go_on_and_only_those(calrelay) -> None:
    from tests.helpers import mkcalendar

    auth = calrelay.auth("alice")
    calendar = f"{calrelay.url.rstrip('/')}/alice/sales/"
    assert mkcalendar(calendar, auth, "Sales").status_code == 201
    names = ("weekly", "daily", "hourly", "ended", "single", "yearly-far")
    for name in names:
        assert put(f"{calendar}{name}.ics", auth, OBJECTS[name]).status_code == 201
    url = calrelay.settings.database_url
    before = index_of(url)
    storage = calrelay.app[ENGINE].storage
    assert storage.extend_index() == 0  # just stored: nothing is due
    later = time.time() + 400 * DAY
    # Due: the open-ended series under the cap; not the capped hourly one, the ended one or the single event.
    assert storage.extend_index(now=later) == 3
    after = index_of(url)
    for name in ("weekly", "daily", "yearly-far"):
        assert after[name][0] > before[name][0], name
        assert after[name][1] > before[name][1] and after[name][2] > before[name][2], name
    for name in ("weekly", "yearly-far"):
        assert after[name][0] >= int(later) + DEFAULT_HORIZON - DAY, name
    assert after["daily"][1] == 1000  # it reaches the per-event cap on the way
    for name in ("hourly", "ended", "single"):
        assert after[name] == before[name], name
    assert storage.extend_index(now=later) == 0  # idempotent
    # A week past the old horizon: answered through the extended index, as an independent expansion does.
    start = datetime.fromtimestamp(before["weekly"][0], UTC) + timedelta(days=30)
    window = (start, start + timedelta(days=7))
    assert query(calendar, auth, *window) == expected(*window) & set(names)


def test_the_server_extends_the_index_when_it_starts(tmp_path) -> None:
    from tests.helpers import mkcalendar

    data = tmp_path / "data"
    with running_calrelay(data) as server:
        auth = server.auth("alice")
        calendar = f"{server.url.rstrip('/')}/alice/sales/"
        assert mkcalendar(calendar, auth, "Sales").status_code == 201
        assert put(f"{calendar}weekly.ics", auth, OBJECTS["weekly"]).status_code == 201
        url = server.settings.database_url
    full = index_of(url)["weekly"]
    # As if the event had been stored a year ago: its index stops a year short of today's horizon.
    stale = full[0] - 365 * DAY
    engine = database.create_engine(url)
    try:
        with database.writing(engine) as connection:
            connection.execute(tables.items.update().values(indexed_until=stale))
            connection.execute(tables.instances.delete().where(tables.instances.c.start >= stale))
    finally:
        engine.dispose()
    assert index_of(url)["weekly"][0] == stale
    with running_calrelay(data):
        deadline = time.monotonic() + 30
        while index_of(url)["weekly"][0] == stale and time.monotonic() < deadline:
            time.sleep(0.2)
    assert index_of(url)["weekly"][0] >= full[0] and index_of(url)["weekly"][1] == full[1]
