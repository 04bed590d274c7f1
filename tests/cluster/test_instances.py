"""Several real ``calrelay serve`` processes on one real PostgreSQL: each iCloud link relayed by exactly one.

- three instances, 500 CRM appointments written round-robin across them, the lease holder SIGKILLed twice
  during the burst: iCloud ends up with exactly the 500, no duplicates; the takeover times are reported;
- the holder SIGSTOPped beyond its lease, another takes over, the stopped one resumed: it writes nothing for
  the link (a trigger records who wrote each relay state row, and who held the lease at that moment);
- a clean shutdown hands the link over at once, far sooner than the lease would expire;
- a CRM write to an instance that does not hold the link reaches iCloud within a second.

The lease is short (3 s) so that takeovers fit the test's time; the mechanism is the one of the 15 s default.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from cryptography.fernet import Fernet

from tests.cluster.conftest import _postgres_database
from tests.cluster.instances import APPLE_ID, CRM, Cluster, EmulatorThread, Instance, link, wait_until
from tests.helpers import event, put

START = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
LEASE = 3.0

#: Records every relay state write: by which instance (its connection's application_name), for which link,
#: and who held that link's lease when the row was written (read in the writing transaction).
WRITE_LOG = """
CREATE TABLE test_writes (at double precision, app text, tbl text, op text, link text, holder text);
CREATE FUNCTION test_log_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE target text := CASE WHEN TG_OP = 'DELETE' THEN OLD."user" ELSE NEW."user" END;
BEGIN
    INSERT INTO test_writes VALUES (extract(epoch FROM clock_timestamp()), current_setting('application_name'),
        TG_TABLE_NAME, TG_OP, target, (SELECT holder FROM cluster_leases WHERE link_key = target));
    RETURN NULL;
END $$;
"""
#: The relay's own writes (the outbox is written by whichever instance takes a CRM write; only the relay
#: deletes from it).
LOGGED = {"relay_items": "INSERT OR UPDATE OR DELETE", "relay_pending": "INSERT OR UPDATE OR DELETE",
          "relay_link_calendars": "UPDATE", "relay_links": "UPDATE", "relay_pull_progress": "INSERT OR UPDATE",
          "relay_outbox": "DELETE"}


@pytest.fixture(scope="module")
def cluster(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    database = _postgres_database(postgres_server)
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), database, 3, LEASE, Fernet.generate_key().decode())
    try:
        cluster.start()
        with cluster.engine.connect() as connection:
            connection.exec_driver_sql(WRITE_LOG)
            for table, operations in LOGGED.items():
                connection.exec_driver_sql(f"CREATE TRIGGER log_{table} AFTER {operations} ON {table} "
                                           "FOR EACH ROW EXECUTE FUNCTION test_log_write()")
        yield cluster
    finally:
        cluster.stop()


def appointment(user: str, number: int, summary: str = "Booked") -> tuple[str, str]:
    uid = f"{user}-{number}"
    return uid, event(uid, START + timedelta(hours=number), summary=summary)


def write(instances: list[Instance], user: str, number: int, summary: str = "Booked") -> Instance:
    """PUT an appointment through the given instances in turn until one takes it (a killed one does not).

    A PUT is idempotent, so one whose answer was lost in a kill is simply made again through another."""
    uid, body = appointment(user, number, summary)
    for attempt in range(20):
        instance = instances[(number + attempt) % len(instances)]
        if not instance.alive:
            continue
        try:
            if put(instance.url + f"{user}/sales/{uid}.ics", CRM, body).status_code in (201, 204):
                return instance
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no instance took {uid}")


@contextlib.contextmanager
def ready(cluster: Cluster, user: str, emulator: EmulatorThread) -> Iterator[Instance]:
    """Link ``user`` through the first instance; the instance that relays it once its first pull is done.
    Unlinked at the end (one Apple ID serves one user, and every test's emulator has the same one)."""
    link(cluster.instances[0], user, emulator)
    try:
        holder = cluster.wait_holder(user, LEASE * 3)
        wait_until(lambda: requests.get(holder.url + f"api/v1/users/{user}/status", auth=CRM, timeout=5)
                 .json()["calendars"][0]["last_pull"], 30, "the first pull is done")
        yield holder
    finally:
        live = cluster.live()[0]
        assert requests.delete(live.url + f"api/v1/users/{user}/link", auth=CRM, timeout=30).status_code in (200, 204)


def test_status_and_health_show_the_holder(cluster: Cluster) -> None:
    with EmulatorThread() as emulator, ready(cluster, "carol", emulator) as holder:
        for instance in cluster.instances:  # any instance tells who relays the link
            report = requests.get(instance.url + "api/v1/users/carol/status", auth=CRM, timeout=5).json()
            assert report["relayed_by"]["instance"] == holder.instance_id
            assert report["relayed_by"]["since"] and report["relayed_by"]["token"] >= 1
            health = instance.health()
            assert health is not None and health["database"] == "ok"
            assert health["instance"] == instance.instance_id
        assert (holder.health() or {})["leases"] >= 1


def test_a_write_to_an_instance_not_holding_the_link_reaches_icloud_within_a_second(cluster: Cluster) -> None:
    with EmulatorThread() as emulator, ready(cluster, "dave", emulator) as holder:
        others = [instance for instance in cluster.instances if instance is not holder]
        write(others, "dave", 100)  # warms the path (connections, caches) before anything is measured
        wait_until(lambda: "dave-100" in emulator.uids(), 10, "the first push")
        latencies = []
        for number in range(10):
            uid, body = appointment("dave", number)
            started = time.monotonic()
            assert put(others[number % 2].url + f"dave/sales/{uid}.ics", CRM, body).status_code == 201
            wait_until(lambda uid=uid: uid in emulator.uids(), 5, f"{uid} in iCloud", interval=0.005)
            latencies.append(time.monotonic() - started)
        print(f"\nwrite to a non-holder -> in iCloud: max {max(latencies) * 1000:.0f} ms, "
              f"all {[round(s * 1000) for s in latencies]} ms")
        assert max(latencies) < 1.0, latencies


def test_a_paused_holder_resumed_after_a_takeover_writes_nothing(cluster: Cluster) -> None:
    # The emulator is slow enough that the pause lands in the middle of the burst.
    with EmulatorThread(latency_ms=150) as emulator, ready(cluster, "bob", emulator) as paused:
        writer = next(instance for instance in cluster.instances if instance is not paused)
        _, old_token, _ = cluster.lease("bob")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: write([writer], "bob", n), range(40)))
        wait_until(lambda: len(emulator.uids()) >= 4, 30, "the holder is pushing")
        paused.signal(signal.SIGSTOP)
        stopped_at = time.time()
        try:
            successor = cluster.wait_holder("bob", LEASE * 4, other_than=[paused])
            _, token, acquired_at = cluster.lease("bob")
            assert token > old_token
            print(f"\ntakeover of a paused holder: {acquired_at - stopped_at:.2f} s (lease {LEASE} s)")
            wait_until(lambda: len(emulator.uids()) == 40, 60, "the successor pushed the rest")
        finally:
            paused.signal(signal.SIGCONT)
        # The resumed instance notices, by itself, that its lease is gone, and stops its worker.
        wait_until(lambda: "relay for bob stopped" in paused.log_text(), 30, "the resumed instance stops relaying bob")
        with cluster.engine.connect() as connection:
            stale = connection.execute(sa.text(
                "SELECT tbl, op, holder, at FROM test_writes WHERE link = 'bob' AND app = :app AND at > :stopped "
                "AND holder IS DISTINCT FROM :me"),
                {"app": paused.name, "me": paused.instance_id, "stopped": stopped_at}).all()
            ours = connection.execute(sa.text(
                "SELECT count(*) FROM test_writes WHERE link = 'bob' AND app = :app"), {"app": successor.name}).scalar()
        assert stale == [], f"the paused instance wrote for bob without holding the lease: {stale}"
        assert ours, "the successor's writes are recorded (the write log works)"
        uids = emulator.uids()
        assert set(uids) == {f"bob-{n}" for n in range(40)} and set(uids.values()) == {1}


def test_a_throttle_met_by_one_instance_holds_back_the_instance_that_takes_over(cluster: Cluster) -> None:
    """The Apple ID's budget is shared: the back-off the holder recorded (longer than Retry-After) binds its
    successor, which pushes the pending appointment only once the back-off is over."""
    with EmulatorThread() as emulator, ready(cluster, "user0", emulator) as holder:
        emulator.server.set_faults(throttle_seconds=0.5, retry_after=6)  # a short throttle, a long Retry-After
        write([holder], "user0", 1)
        query = sa.text("SELECT blocked_until, updated_at FROM apple_id_budgets WHERE apple_id = :id AND strikes > 0")
        with cluster.engine.connect() as connection:
            blocked_until, throttled_at = wait_until(
                lambda: connection.execute(query, {"id": APPLE_ID}).first(), 20, "the throttle is recorded")
        assert blocked_until - throttled_at > 6, "the back-off outlasts Retry-After"
        holder.kill()
        successor = cluster.wait_holder("user0", LEASE * 4, other_than=[holder])
        taken_at = cluster.lease("user0")[2]
        assert taken_at < blocked_until, "taken over while the back-off still holds"
        wait_until(lambda: "user0-1" in emulator.uids(), 30, "the successor pushes once the back-off is over")
        arrived = time.time()
        print(f"\nthrottled at {throttled_at:.1f}, back-off until +{blocked_until - throttled_at:.1f} s, taken over "
              f"at +{taken_at - throttled_at:.1f} s, pushed at +{arrived - throttled_at:.1f} s")
        assert arrived >= blocked_until
        assert successor.alive
        holder.start()


def test_500_appointments_round_robin_with_the_holder_killed_twice(cluster: Cluster) -> None:
    with EmulatorThread(latency_ms=20) as emulator, ready(cluster, "alice", emulator):
        takeovers: list[float] = []
        written = 0

        def burst(numbers: range) -> None:
            nonlocal written
            with ThreadPoolExecutor(6) as pool:
                for _ in pool.map(lambda n: write(cluster.instances, "alice", n), numbers):
                    written += 1

        def kill_holder() -> None:
            victim = cluster.wait_holder("alice", LEASE * 4)
            killed_at = time.time()
            victim.kill()
            cluster.wait_holder("alice", LEASE * 4, other_than=[victim])
            takeovers.append(cluster.lease("alice")[2] - killed_at)
            victim.start()  # back as a new instance, which gets its share again

        with ThreadPoolExecutor(2) as background:
            writing = background.submit(burst, range(500))
            for threshold in (150, 300):
                wait_until(lambda threshold=threshold: written >= threshold, 120, f"{threshold} written")
                kill_holder()
            writing.result(timeout=180)
        for instance in cluster.instances:
            instance.wait_healthy()
        wait_until(lambda: len(emulator.uids()) >= 500, 90, "all 500 in iCloud")
        uids = emulator.uids()
        print(f"\n500 appointments, holder SIGKILLed twice: takeovers {[round(t, 2) for t in takeovers]} s "
              f"(lease {LEASE} s)")
        assert set(uids) == {f"alice-{n}" for n in range(500)}
        duplicates = {uid: count for uid, count in uids.items() if count > 1}
        assert not duplicates, duplicates
        assert all(takeover <= LEASE + 1.0 for takeover in takeovers), takeovers


def test_a_clean_shutdown_hands_the_link_over_at_once(postgres_server: str, tmp_path: Path) -> None:
    lease = 60.0  # expiry cannot explain a takeover within seconds
    cluster = Cluster(tmp_path, _postgres_database(postgres_server), 2, lease, Fernet.generate_key().decode())
    try:
        cluster.start()
        with EmulatorThread() as emulator:
            link(cluster.instances[0], "alice", emulator)
            holder = cluster.wait_holder("alice", 10)
            other = next(instance for instance in cluster.instances if instance is not holder)
            stopped = time.monotonic()
            holder.stop()
            assert cluster.wait_holder("alice", 10) is other
            handover = time.monotonic() - stopped
            print(f"\nclean shutdown -> the other instance holds the link after {handover:.2f} s (lease {lease} s)")
            assert handover < 5
            write([other], "alice", 1)
            wait_until(lambda: "alice-1" in emulator.uids(), 10, "the new holder pushes")
    finally:
        cluster.stop()


def test_every_instance_answers_availability_alike_from_the_shared_index(cluster: Cluster) -> None:
    """Availability reads the instance index in the database: what one instance stored, every instance
    answers at once, with nothing to warm up and no event parsed."""
    from tests.helpers import mkcalendar

    first = cluster.instances[0]
    assert mkcalendar(first.url + "user11/avail/", CRM, "Avail", kind="round-robin").status_code == 201
    weekly = event("weekly", START, 60, extra="RRULE:FREQ=WEEKLY;COUNT=10\r\n")
    for uid, body in [("weekly", weekly), appointment("user11", 1), appointment("user11", 30)]:
        assert put(first.url + f"user11/avail/{uid}.ics", CRM, body).status_code == 201
    window = f"start={START:%Y-%m-%dT%H:%M:%SZ}&end={START + timedelta(days=21):%Y-%m-%dT%H:%M:%SZ}"
    answers = [requests.get(instance.url + f"api/v1/users/user11/availability?{window}", auth=CRM, timeout=30)
               for instance in cluster.live()]
    assert all(answer.status_code == 200 for answer in answers), [answer.text for answer in answers]
    busy = [answer.json()["busy"] for answer in answers]
    assert len(busy[0]) == 4 and all(other == busy[0] for other in busy[1:]), busy
