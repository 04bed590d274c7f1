"""The per-Apple-ID request budget: pure token-bucket properties, and the shared row under racing instances."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from proxy.cluster.budget import Bucket, Policy, full, succeeded_db, take, take_db, throttled, throttled_db
from proxy.database import create_engine, metadata

policies = st.builds(
    Policy,
    rate=st.floats(0.05, 20),
    burst=st.floats(1, 50),
    backoff_min=st.floats(1, 60),
    backoff_max=st.floats(60, 7200),
    margin=st.floats(0.01, 1),
)


@given(policies, st.lists(st.floats(0, 5), min_size=1, max_size=200))
def test_grants_never_exceed_burst_plus_refill(policy: Policy, gaps: list[float]) -> None:
    bucket, now, granted = full(policy, 0.0), 0.0, 0
    for gap in gaps:
        now += gap
        bucket, wait = take(bucket, now, policy)
        granted += wait == 0.0
        assert wait >= 0.0
        assert 0.0 <= bucket.tokens <= policy.burst
    assert granted <= policy.burst + now * policy.rate + 1e-6


@given(policies, st.floats(0, 1000))
def test_waiting_as_told_is_granted(policy: Policy, start: float) -> None:
    bucket = Bucket(tokens=0.0, updated_at=start)
    bucket, wait = take(bucket, start, policy)
    assert wait > 0
    _, again = take(bucket, start + wait + 1e-9, policy)
    assert again == 0.0


@given(policies, st.floats(0, 1e6), st.none() | st.floats(0, 86400), st.integers(0, 20))
def test_back_off_outlasts_retry_after(policy: Policy, now: float, retry_after: float | None, strikes: int) -> None:
    bucket = throttled(Bucket(5.0, now, 0.0, strikes), now, retry_after, policy)
    assert bucket.blocked_until > now + (retry_after or 0.0)
    assert bucket.blocked_until >= now + policy.backoff_min
    assert bucket.tokens == 0.0 and bucket.strikes == strikes + 1
    _, wait = take(bucket, now + (retry_after or 0.0), policy)
    assert wait > 0  # still held off at the moment Retry-After named


@given(policies, st.floats(0, 1e4), st.none() | st.floats(0, 3600), st.lists(st.floats(0, 2), max_size=50))
def test_no_burst_after_a_block(policy: Policy, now: float, retry_after: float | None, gaps: list[float]) -> None:
    bucket = throttled(full(policy, now), now, retry_after, policy)
    start = clock = bucket.blocked_until
    granted = 0
    for gap in gaps:
        clock += gap
        bucket, wait = take(bucket, clock, policy)
        granted += wait == 0.0
    assert granted <= (clock - start) * policy.rate + 1e-6


@given(policies, st.floats(0, 1e6), st.floats(0, 3600))
def test_back_off_grows_and_never_shortens(policy: Policy, now: float, retry_after: float) -> None:
    first = throttled(full(policy, now), now, retry_after, policy)
    second = throttled(first, now, 0.0, policy)
    assert second.blocked_until >= first.blocked_until


def test_clock_behind_refills_nothing() -> None:
    policy = Policy(rate=1, burst=2)
    bucket, _ = take(Bucket(0.5, 100.0), 90.0, policy)
    assert bucket.tokens == 0.5 and bucket.updated_at == 100.0


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        Policy(rate=0)


def test_instances_share_one_budget(db_url: str) -> None:
    """Three instances (engines), four threads each, race for one Apple ID's burst: exactly ``burst`` granted."""
    policy = Policy(rate=0.001, burst=10)
    engines: list[Engine] = [create_engine(db_url) for _ in range(3)]
    metadata.create_all(engines[0])
    barrier = threading.Barrier(12)

    def instance_thread(n: int) -> int:
        engine = engines[n % 3]
        barrier.wait()
        return sum(take_db(engine, "alice@icloud.com", now=1000.0, policy=policy) == 0.0 for _ in range(5))

    try:
        with ThreadPoolExecutor(12) as pool:
            granted = sum(pool.map(instance_thread, range(12)))
        assert granted == 10
        assert take_db(engines[0], "bob@icloud.com", now=1000.0, policy=policy) == 0.0  # its own budget
    finally:
        for engine in engines:
            engine.dispose()


def test_throttle_seen_by_every_instance(engine: Engine, db_url: str) -> None:
    policy = Policy(rate=1, burst=10, backoff_min=30, margin=0.2)
    other = create_engine(db_url)
    try:
        until = throttled_db(engine, "alice@icloud.com", now=0.0, retry_after=60.0, policy=policy)
        assert until == pytest.approx(72.0)
        assert take_db(other, "alice@icloud.com", now=60.0, policy=policy) == pytest.approx(12.0)
        assert take_db(other, "alice@icloud.com", now=73.0, policy=policy) == 0.0
        until = throttled_db(other, "alice@icloud.com", now=80.0, retry_after=None, policy=policy)
        assert until == pytest.approx(80.0 + 60 * 1.2)  # second strike: twice the step
        succeeded_db(engine, "alice@icloud.com")
        until = throttled_db(engine, "alice@icloud.com", now=200.0, retry_after=None, policy=policy)
        assert until == pytest.approx(200.0 + 30 * 1.2)  # reset by the success
    finally:
        other.dispose()
