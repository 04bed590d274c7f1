"""The relay against iCloud's limits (emulator defaults): an expired sync token, and a budget whose back-off
outlasts the Retry-After it announces."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime, timedelta

from proxy.keys import STATE
from proxy.relay.window import SyncWindow
from tests.helpers import event, put
from tests.relay.conftest import make_linked, wait_until
from tests.relay.test_pull import icloud_put, mirror, pulled

START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
OVERRIDES = {"upstream": {"poll_interval": 1.0, "min_backoff": 0.2, "max_backoff": 2.0}}


def _store_put(linked, calendar: str, uid: str, start: datetime) -> None:
    """Write into the emulator's store directly (as another device would), past any fault a test set; on the
    server's event loop, where the emulator also flushes its state."""
    _store_puts(linked, calendar, [(uid, start)])


def _store_puts(linked, calendar: str, events: list[tuple[str, datetime]]) -> None:
    store = linked.emulator.emulator.store
    (state,) = store.accounts.values()

    async def write() -> None:
        for uid, start in events:
            store.put_object(state, state.collections[calendar], f"{uid}.ics", event(uid, start), uid, "VEVENT")

    linked.relay.run(write())


def test_expired_sync_token_falls_back_to_etags_without_reimport(linked, caplog):
    caplog.set_level(logging.INFO, logger="proxy.relay.pull")
    for number in range(3):
        icloud_put(linked, "home", f"old-{number}.ics", event(f"old-{number}", START + timedelta(hours=number)))
    pulled(linked, lambda: len(mirror(linked, "icloud-home")) == 3, "three iCloud events mirrored")
    before = mirror(linked, "icloud-home")
    fetched = linked.worker().stats["fetched"]
    store = linked.emulator.emulator.store
    now = [store.clock()]
    store.clock = lambda: now[0]
    # While the relay is held off, one change lands; fifteen days later another: the token is now expired.
    linked.emulator.set_faults(throttle_seconds=3600, retry_after=1)
    _store_put(linked, "home", "new-1", START + timedelta(days=1))
    now[0] += 15 * 86400
    _store_put(linked, "home", "new-2", START + timedelta(days=2))
    linked.emulator.clear_faults()
    linked.worker().backoff.succeeded()
    linked.worker().schedule.hold_until = 0.0
    pulled(linked, lambda: len(mirror(linked, "icloud-home")) == 5, "the two new events mirrored")
    after = mirror(linked, "icloud-home")
    assert {uid: after[uid] for uid in before} == before  # the old ones untouched
    assert linked.worker().stats["fetched"] == fetched + 2  # only the new ones were read
    assert any("refused the sync token" in record.getMessage() for record in caplog.records)


def test_throttle_with_too_short_retry_after_causes_no_storm(calrelay_factory):
    linked = make_linked(calrelay_factory(overrides=OVERRIDES))
    emulator = linked.emulator
    emulator.set_faults(budget_per_minute=8, retry_after=1, budget_backoff_seconds=3)
    emulator.emulator.requests.clear()
    crm = linked.relay.auth("crm")
    for number in range(12):
        body = event(f"t-{number}", START + timedelta(hours=number))
        assert put(linked.url + f"alice/sales/t-{number}.ics", crm, body).status_code == 201
    wait_until(lambda: len(linked.icloud_store()) == 12, timeout=90, message="all twelve in iCloud")
    counts = emulator.emulator.requests
    # Refusals come in bursts (the requests in flight when the budget ran out). A relay that retried at the
    # announced Retry-After (1 s) would be refused again every second of each 3 s back-off; this one leaves at
    # least twice the Retry-After between bursts, so they are few and spaced.
    times = emulator.emulator.throttled_at
    bursts = [t for previous, t in itertools.pairwise([float("-inf"), *times]) if t - previous > 0.5]
    assert counts["throttle"] >= 1 and len(bursts) >= 1
    assert all(later - earlier >= 2.0 for earlier, later in itertools.pairwise(bursts)), bursts
    penalties = -(-counts["served"] // 8)  # budget windows used up, each ending in one back-off
    assert len(bursts) <= 2 * penalties, (dict(counts), bursts)
    assert counts["throttle"] <= 8 * len(bursts)  # at most the requests in flight (max_concurrency) per burst
    emulator.clear_faults()
    wait_until(lambda: not linked.status()["pending"], timeout=30, message="nothing pending")
    assert emulator.mail() == []


def test_a_calendar_of_1500_events_arrives_whole_under_the_result_limit(linked):
    """More events than iCloud answers with data in one query (1,000): listings carry no data and the
    objects come in multiget batches, so nothing is refused and nothing is missing."""
    _store_puts(linked, "home", [(f"many-{n}", START + timedelta(hours=3 * n)) for n in range(1500)])
    limit = linked.emulator.options.max_query_results
    assert limit == 1000
    db = linked.relay.app[STATE].db

    def mirrored() -> set[str]:
        return {item.uid for item in db.items("alice") if item.uid.startswith("many-") and item.local_href}

    # Waiting on a counter, not on a read of 1,500 status rows every 50 ms: the server runs in this process,
    # and such polling took the CPU the import needs (81 s instead of under 20).
    wait_until(lambda: linked.worker().stats["imported"] >= 1500, timeout=120, message="all 1,500 events imported")
    assert mirrored() == {f"many-{number}" for number in range(1500)}
    assert len([uid for uid in mirror(linked, "icloud-home") if uid.startswith("many-")]) == 1500
    assert linked.worker().stats["fetched"] >= 1500


def test_sync_window_and_the_full_listing_that_catches_events_entering_it(calrelay_factory):
    overrides = {"upstream": {**OVERRIDES["upstream"], "window_future_days": 30, "full_pull_interval": 1.0}}
    linked = make_linked(calrelay_factory(overrides=overrides))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    icloud_put(linked, "home", "far.ics", event("far", now + timedelta(days=45)))
    icloud_put(linked, "home", "near.ics", event("near", now + timedelta(days=5)))
    pulled(linked, lambda: "near" in mirror(linked, "icloud-home"), "the event inside the window")
    assert "far" not in mirror(linked, "icloud-home")  # pulled in the same pass, left out
    # Time passes (the window moves): the daily full listing imports it, though nothing changed in iCloud.
    linked.worker().window = SyncWindow(90, 60)
    pulled(linked, lambda: "far" in mirror(linked, "icloud-home"), "the event that entered the window")
