"""The SQL storage's instance index against runaway rules, seen from outside (issue 13): a stored SECONDLY
rule adds at most the per-event cap of rows (1,000) and is marked as listed only up to its last one, so a
time-range query beyond that still finds it by its bounds, and the guard refuses to expand it."""

from __future__ import annotations

import time

import requests
import sqlalchemy as sa

from plugins.sqlstore import tables
from plugins.sqlstore.storage import DEFAULT_CAP, DEFAULT_HORIZON
from proxy import database
from tests.helpers import mkcalendar, put
from tests.hostile.test_runaway import calendar_query, runaway, store_behind_calrelays_back

XML = {"Content-Type": "application/xml", "Depth": "1"}


def index_rows(server) -> dict[str, tuple[int, int]]:
    """href -> (instance rows, indexed_until) of alice's booking calendar."""
    engine = database.create_engine(server.settings.database_url)
    try:
        with database.reading(engine) as connection:
            counts = dict(connection.execute(
                sa.select(tables.instances.c.href, sa.func.count()).group_by(tables.instances.c.href)).all())
            until = dict(connection.execute(sa.select(tables.items.c.href, tables.items.c.indexed_until)).all())
    finally:
        engine.dispose()
    return {href: (counts.get(href, 0), until[href]) for href in until}


def test_a_stored_runaway_adds_at_most_the_cap_to_the_index(calrelay):
    alice = calrelay.auth("alice")
    assert mkcalendar(calrelay.url + "alice/sales/", alice, "Sales", kind="round-robin").status_code == 201
    for freq in ("SECONDLY", "MINUTELY"):  # 63 million and a million instances in the index's two years
        store_behind_calrelays_back(calrelay.data_dir, "/alice/sales/", f"{freq}.ics", runaway(freq, freq))
    assert put(calrelay.url + "alice/sales/hourly.ics", alice, runaway("hourly", "HOURLY")).status_code == 201
    assert put(calrelay.url + "alice/sales/weekly.ics", alice, runaway("weekly", "WEEKLY")).status_code == 201
    rows = index_rows(calrelay)
    # A rule with more instances than the cap is listed up to its 1,000th, and marked so.
    second = 1_767_225_600  # DTSTART of runaway(), 2026-01-01T00:00:00Z
    assert rows["SECONDLY.ics"] == (DEFAULT_CAP, second + DEFAULT_CAP - 1)
    assert rows["MINUTELY.ics"] == (DEFAULT_CAP, second + 60 * (DEFAULT_CAP - 1))
    assert rows["hourly.ics"] == (DEFAULT_CAP, second + 3600 * (DEFAULT_CAP - 1))
    # An ordinary rule is listed whole up to the horizon: two years of weeks.
    count, until = rows["weekly.ics"]
    assert count < DEFAULT_CAP and until >= time.time() + DEFAULT_HORIZON - 600
    # Past what the index lists, the bounds decide: a query in December still reaches the runaways, and the
    # guard refuses to expand them, naming the event, instead of the query missing them.
    for expand in (False, True):
        response = requests.request("REPORT", calrelay.url + "alice/sales/", auth=alice, headers=XML,
                                    data=calendar_query(expand), timeout=30)
        assert response.status_code == 400, response.text
        assert "too many to expand" in response.text and ("SECONDLY" in response.text or "MINUTELY" in response.text)
