"""What a first import costs the database, counted rather than timed (bench/relay_import.py times it).

An import writes in batches: each batch of mirror objects is one storage transaction of a handful of
statements, its statuses one statement, its audit entries one transaction, whatever the batch's size.
Counting the SQL statements, writes and commits of a whole import guards that on any machine; the bounds sit
well over what batches need and well under one per event.
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from proxy.keys import ENGINE, RELAY, STATE
from tests.helpers import mkcalendar
from tests.relay.conftest import link, wait_until
from tests.relay.test_import import seed

EVENTS = 400
BATCH = 50


def test_an_import_writes_in_batches_not_per_event(calrelay_factory) -> None:
    relay = calrelay_factory(overrides={"upstream": {"poll_interval": 3600, "import_batch": BATCH}})
    assert mkcalendar(relay.url + "alice/sales/", relay.auth("crm"), "Sales", kind="round-robin").status_code == 201
    seed(relay, EVENTS)
    engines = {id(relay.app[ENGINE].storage.engine): relay.app[ENGINE].storage.engine,
               id(relay.app[STATE].db.engine): relay.app[STATE].db.engine}
    counted: Counter[str] = Counter()

    def statement(conn, cursor, sql: str, *args) -> None:
        counted["statements"] += 1
        counted["writes"] += sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))

    def commit(conn) -> None:
        counted["commits"] += 1

    for engine in engines.values():
        sa.event.listen(engine, "before_cursor_execute", statement)
        sa.event.listen(engine, "commit", commit)
    try:
        link(relay)

        def done() -> bool:  # read in memory: polling the database would add to the count
            worker = relay.app[RELAY].worker("alice")
            return worker is not None and any(c.last_success_at for c in worker.calendars.values()
                                              if c.remote_url.rstrip("/").endswith("/work"))

        wait_until(done, timeout=120, message="first import")
    finally:
        for engine in engines.values():
            sa.event.remove(engine, "before_cursor_execute", statement)
            sa.event.remove(engine, "commit", commit)
    assert relay.app[RELAY].worker("alice").stats["imported"] == EVENTS
    mirror = relay.app[ENGINE].read_items("/alice/icloud-work/")
    assert len(mirror) == EVENTS
    # Everything the server did meanwhile counts too (the link, the push pass, the lease's fencing of each state
    # write), so the bounds are loose: at the time of writing 400 events cost ~435 statements, ~140 writes and
    # ~135 commits; with one audit transaction per event it was ~1030, ~460 and ~470, and with one storage write
    # per event several thousand.
    assert counted["writes"] < EVENTS / 2, counted
    assert counted["commits"] < EVENTS / 2, counted
    assert counted["statements"] < 1.5 * EVENTS, counted
