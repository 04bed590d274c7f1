"""The outbox: a CRM write's relay work is recorded before the response, stays until its item is reconciled
with iCloud, and wakes the relay even when the write was made by another process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from plugins.scope import Change, ChangeAction
from proxy.engine import Engine
from proxy.keys import AUTHENTICATOR, STATE
from proxy.relay import outbox
from proxy.relay.outbox import OutboxRow, OutboxWriter, reconciled
from tests.helpers import event, mkcalendar, put
from tests.relay.conftest import make_linked, stored_events, wait_until

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _row(id_: int, path: str = "/alice/sales/", href: str | None = "a.ics") -> OutboxRow:
    return OutboxRow(id_, "alice", path, href, "item-put")


def test_reconciled_keeps_only_rows_whose_item_is_still_pending():
    places = {("/alice/sales/", "a.ics"): "a", ("/alice/sales/", "b.ics"): "b", ("/alice/intro/", "c.ics"): "c"}
    taken = [_row(1), _row(2, href="b.ics"), _row(3, href="gone.ics"), _row(4, href=None),
             _row(5, path="/alice/intro/", href=None)]
    # b is pending: its row stays, and so does the row of its whole collection; the others are done.
    assert reconciled(taken, places, {"b"}) == [1, 3, 5]
    assert reconciled(taken, places, set()) == [1, 2, 3, 4, 5]


@given(st.lists(st.tuples(st.sampled_from(["a.ics", "b.ics", "c.ics", None]), st.booleans()), max_size=20),
       st.sets(st.sampled_from(["a", "b", "c"])))
def test_a_row_of_a_pending_item_is_never_dropped(rows, pending):
    places = {("/alice/sales/", f"{uid}.ics"): uid for uid in "abc"}
    taken = [_row(n, href=href) for n, (href, _) in enumerate(rows)]
    done = set(reconciled(taken, places, pending))
    for row in taken:
        uid = places.get(("/alice/sales/", row.href)) if row.href else None
        if uid in pending or (row.href is None and pending):
            assert row.id not in done
        else:
            assert row.id in done


def test_relay_work_stays_in_the_outbox_until_icloud_has_it(calrelay_factory, database_url):
    relay = calrelay_factory(overrides={"storage": {"database": database_url},
                                        "upstream": {"poll_interval": 1.0, "min_backoff": 0.2, "max_backoff": 1.0}})
    linked = make_linked(relay)
    engine = relay.app[STATE].db.engine
    linked.emulator.set_faults(error_rate=1.0)  # iCloud fails every request
    assert put(relay.url + "alice/sales/a.ics", relay.auth("crm"), event("a", START)).status_code == 201
    (row,) = outbox.rows(engine, "alice")  # recorded before the response
    assert (row.collection_path, row.href, row.action) == ("/alice/sales/", "a.ics", "item-put")
    wait_until(lambda: any(p["uid"] == "a" and p["attempts"] >= 2 for p in linked.status()["pending"]),
               message="push tried and failed twice")
    assert [r.id for r in outbox.rows(engine, "alice")] == [row.id]  # not reconciled: kept
    linked.emulator.clear_faults()
    wait_until(lambda: "a" in stored_events(linked.emulator), message="pushed once iCloud answers")
    wait_until(lambda: outbox.rows(engine, "alice") == [], message="row removed once reconciled")
    assert linked.status()["pending"] == []


def test_a_write_by_another_process_wakes_the_relay_through_the_outbox(calrelay_factory, database_url):
    # Without a pull due (hourly), only a wake-up makes a push pass: here only the outbox can give one.
    relay = calrelay_factory(overrides={"storage": {"database": database_url}, "upstream": {"poll_interval": 3600}})
    linked = make_linked(relay)
    other = Engine(relay.settings, relay.app[AUTHENTICATOR].users)  # as another process would
    try:
        other.put_item("/alice/sales/", "b.ics", event("b", START + timedelta(days=1)))
        OutboxWriter(relay.app[STATE].db.engine)([Change(ChangeAction.ITEM_PUT, "/alice/sales/", "b.ics")])
    finally:
        other.close()
    wait_until(lambda: "b" in stored_events(linked.emulator), message="pushed after the outbox woke the relay")
    wait_until(lambda: outbox.rows(relay.app[STATE].db.engine, "alice") == [], message="row consumed")


def test_rows_of_users_without_a_link_do_not_pile_up(calrelay_factory):
    relay = calrelay_factory()
    crm = relay.auth("crm")
    assert mkcalendar(relay.url + "bob/sales/", crm, "Sales", kind="round-robin").status_code == 201
    assert put(relay.url + "bob/sales/x.ics", crm, event("x", START)).status_code == 201
    engine = relay.app[STATE].db.engine
    assert [r.href for r in outbox.rows(engine, "bob")] == [None, "x.ics"]  # the new calendar, its item
    wait_until(lambda: outbox.rows(engine, "bob") == [], message="dropped: nobody relays bob")
