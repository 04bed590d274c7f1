"""One iCloud request budget per Apple ID, shared by every instance through the database.

Apple throttles per account, not per host: three instances each keeping a polite pace of their own would
together be three times too fast for an Apple ID whose links they share out. So the budget is a row per Apple
ID in ``apple_id_budgets``: a token bucket (``tokens`` refilled at ``rate`` per second up to ``burst``) and a
back-off record (``blocked_until``, ``strikes``). Every instance takes its tokens from that one row, in a short
transaction that locks it (``SELECT ... FOR UPDATE`` on PostgreSQL, the write lock on SQLite).

A 429/503 from iCloud records a back-off that *outlasts* the announced Retry-After: iCloud's Retry-After is
routinely shorter than the throttle it reports (docs/icloud.md), so the block is the longer of Retry-After and
our own exponential step, plus a margin, and it empties the bucket so requests resume at the refill pace rather
than in a burst. A success resets the exponential step. The arithmetic is pure (:func:`take`,
:func:`throttled`); the functions ending in ``_db`` do the I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from proxy.cluster.leases import limit_idle
from proxy.database import metadata, writing

apple_id_budgets = sa.Table(
    "apple_id_budgets",
    metadata,
    # The Apple ID, normalised (lower-case), as the links record it.
    sa.Column("apple_id", sa.String(320), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("blocked_until", sa.Float, nullable=False, server_default="0"),
    sa.Column("strikes", sa.Integer, nullable=False, server_default="0"),
)


@dataclass(frozen=True, slots=True)
class Policy:
    """The pace allowed per Apple ID, and how back-off grows."""

    rate: float = 1.0  # requests per second, sustained
    burst: float = 10.0  # requests allowed at once after a quiet spell
    backoff_min: float = 30.0  # the first back-off step, seconds
    backoff_max: float = 3600.0  # the largest step (Retry-After can still be longer)
    margin: float = 0.2  # a block lasts this fraction longer than the longer of step and Retry-After

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("an Apple ID budget needs rate > 0 and burst >= 1")


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated_at: float
    blocked_until: float = 0.0
    strikes: int = 0


def full(policy: Policy, now: float) -> Bucket:
    return Bucket(tokens=policy.burst, updated_at=now)


def take(bucket: Bucket, now: float, policy: Policy) -> tuple[Bucket, float]:
    """Try to spend one request: (new bucket, 0.0) when granted, else (new bucket, seconds to wait)."""
    # Nothing refills while blocked, so requests resume at the refill pace, not in a burst; a clock that went
    # backwards (another instance's, slightly behind) refills nothing rather than negatively.
    elapsed = max(0.0, now - max(bucket.updated_at, bucket.blocked_until))
    tokens = min(policy.burst, bucket.tokens + elapsed * policy.rate)
    refilled = replace(bucket, tokens=tokens, updated_at=max(now, bucket.updated_at))
    if now < bucket.blocked_until:
        return refilled, bucket.blocked_until - now
    if tokens >= 1.0:
        return replace(refilled, tokens=tokens - 1.0), 0.0
    return refilled, (1.0 - tokens) / policy.rate


def throttled(bucket: Bucket, now: float, retry_after: float | None, policy: Policy) -> Bucket:
    """Record a 429/503: block for longer than both Retry-After and the exponential step; empty the bucket."""
    step = min(policy.backoff_max, policy.backoff_min * 2**bucket.strikes)
    wait = max(step, retry_after or 0.0) * (1.0 + policy.margin)
    return Bucket(
        tokens=0.0,
        updated_at=max(now, bucket.updated_at),
        blocked_until=max(bucket.blocked_until, now + wait),
        strikes=bucket.strikes + 1,
    )


def _insert(connection: sa.Connection) -> sa.Insert:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(apple_id_budgets)


def _locked(connection: sa.Connection, apple_id: str, now: float, policy: Policy) -> Bucket:
    limit_idle(connection)  # the row lock must not outlive a pause of this process: every instance needs it
    start = full(policy, now)
    connection.execute(
        _insert(connection)
        .values(apple_id=apple_id, tokens=start.tokens, updated_at=start.updated_at)
        .on_conflict_do_nothing()
    )
    row = connection.execute(
        sa.select(apple_id_budgets).where(apple_id_budgets.c.apple_id == apple_id).with_for_update()
    ).one()
    return Bucket(row.tokens, row.updated_at, row.blocked_until, row.strikes)


def _store(connection: sa.Connection, apple_id: str, bucket: Bucket) -> None:
    connection.execute(
        apple_id_budgets.update()
        .where(apple_id_budgets.c.apple_id == apple_id)
        .values(
            tokens=bucket.tokens,
            updated_at=bucket.updated_at,
            blocked_until=bucket.blocked_until,
            strikes=bucket.strikes,
        )
    )


def take_db(engine: Engine, apple_id: str, *, now: float, policy: Policy) -> float:
    """Spend one request of ``apple_id``'s shared budget: 0.0 when granted, else the seconds to wait first."""
    with writing(engine) as connection:
        bucket, wait = take(_locked(connection, apple_id, now, policy), now, policy)
        _store(connection, apple_id, bucket)
    return wait


def throttled_db(engine: Engine, apple_id: str, *, now: float, retry_after: float | None, policy: Policy) -> float:
    """Record that iCloud throttled ``apple_id``; returns the time until which every instance holds off."""
    with writing(engine) as connection:
        bucket = throttled(_locked(connection, apple_id, now, policy), now, retry_after, policy)
        _store(connection, apple_id, bucket)
    return bucket.blocked_until


def succeeded_db(engine: Engine, apple_id: str) -> None:
    """A request went through: the next throttle starts from the smallest step again."""
    with writing(engine) as connection:
        connection.execute(
            apple_id_budgets.update()
            .where(apple_id_budgets.c.apple_id == apple_id, apple_id_budgets.c.strikes > 0)
            .values(strikes=0)
        )


class AccountBudget:
    """One link's use of its Apple ID's shared budget, from the event loop (the database calls run in threads).

    :meth:`spend` before every iCloud request waits until the shared bucket grants one (the wait is served in
    steps of at most a second, calling ``check`` between them, so a worker whose lease was lost stops waiting);
    :meth:`throttled` records a 429/503 for every instance; :meth:`succeeded` resets the back-off step.
    """

    def __init__(self, engine: Engine, apple_id: str, policy: Policy) -> None:
        self.engine = engine
        self.apple_id = apple_id.lower()
        self.policy = policy
        self._struck = True  # a previous holder may have left strikes: the first success clears them

    async def spend(self, check: Callable[[], None] = lambda: None) -> None:
        while True:
            check()
            wait = await asyncio.to_thread(take_db, self.engine, self.apple_id, now=time.time(), policy=self.policy)
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, 1.0))

    async def throttled(self, retry_after: float | None) -> float:
        """Record the throttle; the wall-clock time until which every instance holds off this Apple ID."""
        self._struck = True
        return await asyncio.to_thread(
            throttled_db, self.engine, self.apple_id, now=time.time(), retry_after=retry_after, policy=self.policy
        )

    async def succeeded(self) -> None:
        if self._struck:
            self._struck = False
            await asyncio.to_thread(succeeded_db, self.engine, self.apple_id)
