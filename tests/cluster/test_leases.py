"""Leases against a real database (SQLite file and PostgreSQL 15): acquire, renew, release, steal, fencing."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from proxy.cluster import leases
from proxy.cluster.leases import LeaseLost, acquire, fenced, release, renew
from proxy.database import metadata, writing

# A stand-in for a relay state table: what a fenced write records (on its own metadata: not calrelay's schema).
test_metadata = sa.MetaData()
writes = sa.Table(
    "test_fenced_writes",
    test_metadata,
    sa.Column("link_key", sa.String(400), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("last_token", sa.BigInteger, nullable=False),
)

LINK = "alice/icloud-1"


@pytest.fixture(autouse=True)
def writes_table(engine: Engine) -> None:
    test_metadata.create_all(engine)


def fenced_write(engine: Engine, link: str, token: int) -> None:
    """One relay state write, guarded by the lease: bumps the counter and records the writer's token."""
    with writing(engine) as connection:
        fenced(connection, link, token)
        row = connection.execute(sa.select(writes).where(writes.c.link_key == link)).first()
        if row is None:
            connection.execute(writes.insert().values(link_key=link, count=1, last_token=token))
            return
        if row.last_token > token:
            raise AssertionError(f"token {token} wrote after token {row.last_token}")
        connection.execute(
            writes.update().where(writes.c.link_key == link).values(count=row.count + 1, last_token=token)
        )


def test_acquire_renew_release(engine: Engine) -> None:
    lease = acquire(engine, LINK, "a", now=100.0)
    assert lease is not None and lease.token == 1 and lease.expires_at == 115.0
    assert acquire(engine, LINK, "b", now=101.0) is None
    renewed = renew(engine, lease, now=110.0)
    assert renewed is not None and renewed.token == 1 and renewed.expires_at == 125.0
    assert acquire(engine, LINK, "b", now=120.0) is None  # renewed: not yet expired
    assert release(engine, renewed)
    taken = acquire(engine, LINK, "b", now=120.5)  # a release hands over at once
    assert taken is not None and taken.holder == "b" and taken.token == 2
    assert renew(engine, renewed, now=121.0) is None
    assert not release(engine, renewed)


def test_steal_after_expiry_fences_the_old_holder(engine: Engine) -> None:
    old = acquire(engine, LINK, "a", now=0.0, ttl=15.0)
    assert old is not None
    fenced_write(engine, LINK, old.token)
    new = acquire(engine, LINK, "b", now=15.0)
    assert new is not None and new.token == old.token + 1
    # The old holder resumes (it was paused): its write is refused and leaves no trace.
    with pytest.raises(LeaseLost):
        fenced_write(engine, LINK, old.token)
    assert renew(engine, old, now=16.0) is None
    fenced_write(engine, LINK, new.token)
    with engine.connect() as connection:
        row = connection.execute(sa.select(writes)).one()
    assert (row.count, row.last_token) == (2, new.token)


def test_expired_lease_nobody_took_is_renewed(engine: Engine) -> None:
    lease = acquire(engine, LINK, "a", now=0.0)
    assert lease is not None
    renewed = renew(engine, lease, now=30.0)  # paused past expiry, but no steal happened: token is current
    assert renewed is not None and renewed.token == lease.token
    fenced_write(engine, LINK, renewed.token)


def test_released_lease_cannot_write(engine: Engine) -> None:
    lease = acquire(engine, LINK, "a", now=0.0)
    assert lease is not None and release(engine, lease)
    with pytest.raises(LeaseLost):
        fenced_write(engine, LINK, lease.token)


def test_leave_hands_over_every_lease(engine: Engine) -> None:
    leases.heartbeat(engine, "a", now=0.0)
    leases.heartbeat(engine, "b", now=0.0)
    for n in range(5):
        assert acquire(engine, f"link-{n}", "a", now=1.0) is not None
    assert leases.leave(engine, "a") == 5
    assert leases.live_instances(engine, now=2.0) == ["b"]
    assert all(acquire(engine, f"link-{n}", "b", now=2.0) is not None for n in range(5))


def test_instances_expire_without_heartbeat(engine: Engine) -> None:
    leases.heartbeat(engine, "a", now=0.0, ttl=15.0)
    leases.heartbeat(engine, "b", now=0.0, ttl=15.0)
    leases.heartbeat(engine, "b", now=10.0, ttl=15.0)
    assert leases.live_instances(engine, now=14.0) == ["a", "b"]
    assert leases.live_instances(engine, now=16.0) == ["b"]


def test_racing_acquirers_exactly_one_holder(engine: Engine) -> None:
    """Sixteen threads, each on its own connection, race for each of twenty links at the same instant."""
    barrier = threading.Barrier(16)

    def contender(n: int) -> list[str]:
        won = []
        for link in range(20):
            barrier.wait()
            if acquire(engine, f"link-{link}", f"i{n}", now=50.0) is not None:
                won.append(f"link-{link}")
        return won

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(contender, range(16)))
    won = [link for result in results for link in result]
    assert sorted(won) == sorted(f"link-{n}" for n in range(20))  # every link exactly once
    rows = leases.leases(engine)
    assert all(row.token == 1 for row in rows)


def test_racing_steals_and_fenced_writes(engine: Engine) -> None:
    """Threads keep stealing one link (ttl 0) and writing with their token; writes never go back in token order.

    Without the fence a writer holding an old token would commit after a newer holder's write, which
    ``fenced_write`` detects; with it, every stale write is refused and every accepted one is counted.
    """
    accepted = [0] * 8
    refused = [0] * 8

    def contender(n: int) -> None:
        for _ in range(40):
            lease = acquire(engine, LINK, f"i{n}", now=1.0, ttl=0.0)
            if lease is None:
                continue
            for _ in range(2):
                try:
                    fenced_write(engine, LINK, lease.token)
                    accepted[n] += 1
                except LeaseLost:
                    refused[n] += 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(contender, range(8)))
    with engine.connect() as connection:
        row = connection.execute(sa.select(writes)).one()
    assert row.count == sum(accepted) > 0


def _wait_for_lock_waiter(engine: Engine, seconds: float = 10.0) -> bool:
    """True once another session waits for a lock (seen in pg_stat_activity), False after ``seconds``."""
    deadline = time.monotonic() + seconds
    # Autocommit: inside one transaction PostgreSQL would keep answering from its first snapshot of the view.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        while time.monotonic() < deadline:
            waiting = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).scalar()
            if waiting:
                return True
            time.sleep(0.02)
    return False


def test_fenced_write_in_flight_blocks_a_steal(pg_url: str) -> None:
    """PostgreSQL: a steal waits for a fenced write in progress, then the old holder is fenced."""
    from proxy.database import create_engine

    engine = create_engine(pg_url)
    metadata.create_all(engine)
    test_metadata.create_all(engine)
    try:
        old = acquire(engine, LINK, "a", now=0.0)
        assert old is not None
        stolen: list[leases.Lease | None] = []
        with writing(engine) as connection:
            fenced(connection, LINK, old.token)
            thief = threading.Thread(target=lambda: stolen.append(acquire(engine, LINK, "b", now=100.0)))
            thief.start()
            waiting = _wait_for_lock_waiter(engine)  # the thief is blocked on this transaction's row lock
            connection.execute(writes.insert().values(link_key=LINK, count=1, last_token=old.token))
        thief.join(timeout=10)
        assert waiting
        assert stolen and stolen[0] is not None and stolen[0].token == old.token + 1
        with pytest.raises(LeaseLost):
            fenced_write(engine, LINK, old.token)
    finally:
        engine.dispose()


def test_members_share_links_and_follow_unlinking(engine: Engine) -> None:
    a, b = leases.Member(engine, "a"), leases.Member(engine, "b")
    links = [f"link-{n}" for n in range(4)]
    assert len(a.step(links, now=0.0).acquired) == 4  # alone: takes everything
    assert b.step(links, now=1.0).acquired == ()  # nothing free yet
    assert len(a.step(links, now=2.0).lost) == 2  # sees b: gives up its surplus
    assert len(b.step(links, now=3.0).acquired) == 2
    assert sorted([*a.held, *b.held]) == links
    gone = sorted(a.held)[0]
    changes = a.step([link for link in links if link != gone], now=4.0)
    assert gone in changes.lost and gone not in a.held
    assert all(row.holder is None for row in leases.leases(engine) if row.link_key == gone)


def test_a_member_stops_the_worker_before_releasing_and_its_guards_follow_the_leases(engine: Engine) -> None:
    first = leases.Member(engine, "a", lease_seconds=30)
    links = ["alice", "bob"]
    now = time.time()
    acquired = first.step(links, now=now).acquired
    assert {lease.link_key for lease in acquired} == set(links)
    guards = {link: first.guard(link) for link in links}
    assert all(guard is not None and guard.valid() for guard in guards.values())

    second = leases.Member(engine, "b", lease_seconds=30)
    second.step(links, now=now)  # joins: "a" is over its new share of one

    def still_held_when_asked(link_key: str) -> None:  # the worker is stopped while the lease is still "a"'s
        (row,) = [row for row in leases.leases(engine) if row.link_key == link_key]
        released.append((link_key, row.holder))

    released: list[tuple[str, str | None]] = []
    changes = first.step(links, now=now + 1, before_release=still_held_when_asked)
    (given_up,) = changes.lost
    assert released == [(given_up, "a")]
    assert [row.holder for row in leases.leases(engine) if row.link_key == given_up] == [None]
    given_up_guard = guards[given_up]
    assert given_up_guard is not None and not given_up_guard.valid()
    with pytest.raises(LeaseLost):
        given_up_guard.check()
    kept = next(link for link in links if link != given_up)
    kept_guard = first.guard(kept)
    assert kept_guard is not None and kept_guard.valid()
    first.leave()
    assert not kept_guard.valid()


def test_a_guard_expires_on_the_monotonic_clock_without_a_renewal(engine: Engine) -> None:
    member = leases.Member(engine, "a", lease_seconds=1.0)
    member.step(["alice"], now=time.time())
    guard = member.guard("alice")
    assert guard is not None and guard.valid()
    deadline = time.monotonic() + 5
    while guard.valid() and time.monotonic() < deadline:  # no step: nothing renews it
        time.sleep(0.02)
    assert not guard.valid()
    member.step(["alice"], now=time.time())  # renewed late, nobody took it: valid again, same token
    assert guard.valid() and member.guard("alice") is guard
