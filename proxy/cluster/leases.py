"""Link leases with fencing: which instance relays which iCloud link.

Several calrelay instances share one database. Each iCloud link must be relayed by exactly one of them, and an
instance that *believes* it still holds a link after it lost it (paused by the kernel, a long GC, a network
partition) must never push or record for that link again. Two tables carry this:

``cluster_instances``
    one row per live instance, with a heartbeat and an expiry. An instance whose expiry has passed is dead for
    the balancing decision (:func:`plan`).

``cluster_leases``
    one row per link: the holder's instance id, a **fencing token** and an expiry. Every acquisition
    (a fresh take or a steal after expiry) increments the token, so the token only ever grows; renewal and
    release keep it. A relay state write calls :func:`fenced` inside its own transaction: the guard
    ``UPDATE cluster_leases ... WHERE link_key = :link AND token = :token AND holder IS NOT NULL`` matches no
    row once anybody else has acquired the link, and then raises :class:`LeaseLost`, rolling the write back.
    On PostgreSQL the guard's row lock is held until the write commits, so a steal waits for an in-flight
    fenced write and a fenced write after a steal sees the new token (READ COMMITTED re-checks the ``WHERE``
    against the latest row version). On SQLite every writing transaction holds the database write lock
    (``BEGIN IMMEDIATE``), which serialises the same way.

Why rows with heartbeat + expiry + token rather than PostgreSQL advisory locks held on a session:

* the same code runs on SQLite, the single-machine default, and on PostgreSQL;
* an advisory lock says who holds a link *now*, but a process paused while holding it learns nothing when it
  resumes, and nothing stops its in-flight write; the fencing token is checked by the database inside the write
  itself, so it survives a paused process, a partition and a lost session alike;
* leases are plain rows, so ``calrelay status`` and the API can show who holds each link and since when;
* advisory locks pin a database session per holder, which does not fit a connection pool or PgBouncer in
  transaction mode.

Correctness rests on the token, not on clocks: a clock that is off between instances only makes a takeover
earlier or later, never lets two instances write for the same link. Times are seconds since the epoch, passed
in by the caller (``now``), so the policy is testable and every instance uses its own (NTP-synchronised) clock.
Each operation is one SQL statement (plus an idempotent insert for a link's first row), correct under
concurrency on both backends.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from proxy.database import metadata, writing

logger = logging.getLogger(__name__)

#: A lease not renewed for this long may be taken over (the issue's "within 15 s").
DEFAULT_LEASE_SECONDS = 15.0
#: PostgreSQL ends a fenced transaction left idle this long (its process paused or hung mid-write), which
#: frees the lease row it locked: otherwise a holder paused inside a write would block every takeover of the
#: link until it resumed. Relay transactions are a few statements, never near this.
FENCE_IDLE_LIMIT = 2.0

instances = sa.Table(
    "cluster_instances",
    metadata,
    sa.Column("instance_id", sa.String(200), primary_key=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

cluster_leases = sa.Table(
    "cluster_leases",
    metadata,
    sa.Column("link_key", sa.String(400), primary_key=True),
    # NULL when nobody holds the link (never taken, or released by a clean shutdown).
    sa.Column("holder", sa.String(200), nullable=True),
    sa.Column("token", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("acquired_at", sa.Float, nullable=False, server_default="0"),
    sa.Column("expires_at", sa.Float, nullable=False, server_default="0"),
)


class LeaseLost(Exception):
    """The lease a write was fenced with is no longer current: another instance holds the link now."""

    def __init__(self, link_key: str, token: int) -> None:
        super().__init__(f"lease on {link_key!r} with token {token} is no longer held; the write was refused")
        self.link_key = link_key
        self.token = token


@dataclass(frozen=True, slots=True)
class Lease:
    link_key: str
    holder: str
    token: int
    acquired_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """A lease as seen in the table, for balancing and for status (``holder`` None when free)."""

    link_key: str
    holder: str | None
    token: int
    acquired_at: float
    expires_at: float

    def live_holder(self, now: float) -> str | None:
        return self.holder if self.holder is not None and self.expires_at > now else None


def _insert(connection: sa.Connection, table: sa.Table) -> sa.Insert:
    """An INSERT that supports ON CONFLICT for the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# --- instances -------------------------------------------------------------------------------------------------


def heartbeat(engine: Engine, instance_id: str, *, now: float, ttl: float = DEFAULT_LEASE_SECONDS) -> None:
    """Register ``instance_id`` or extend its life (an upsert)."""
    with writing(engine) as connection:
        limit_idle(connection)  # its row locks must not outlive a pause of this process
        statement = _insert(connection, instances).values(
            instance_id=instance_id, started_at=now, heartbeat_at=now, expires_at=now + ttl
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[instances.c.instance_id],
                set_={"heartbeat_at": now, "expires_at": now + ttl},
            )
        )


def live_instances(engine: Engine, *, now: float) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(instances.c.instance_id).where(instances.c.expires_at > now).order_by(instances.c.instance_id)
        )
        return [row.instance_id for row in rows]


def leave(engine: Engine, instance_id: str) -> int:
    """A clean shutdown: release every lease of ``instance_id`` at once and deregister it.

    Returns the number of leases released; others can take them over immediately, with no expiry gap.
    """
    with writing(engine) as connection:
        limit_idle(connection)  # its row locks must not outlive a pause of this process
        released = connection.execute(
            cluster_leases.update().where(cluster_leases.c.holder == instance_id).values(holder=None, expires_at=0.0)
        ).rowcount
        connection.execute(instances.delete().where(instances.c.instance_id == instance_id))
    logger.info("instance %s left, releasing %d lease(s)", instance_id, released)
    return released


# --- leases ----------------------------------------------------------------------------------------------------


def acquire(
    engine: Engine, link_key: str, instance_id: str, *, now: float, ttl: float = DEFAULT_LEASE_SECONDS
) -> Lease | None:
    """Take the lease on ``link_key`` if it is free or expired (a steal); None if another instance holds it.

    The token grows by one on every acquisition, so whoever held the link before is fenced off from then on.
    A lease ``instance_id`` already holds is not re-acquired (that would fence its own writes): use
    :func:`renew`.
    """
    with writing(engine) as connection:
        limit_idle(connection)  # its row locks must not outlive a pause of this process
        connection.execute(_insert(connection, cluster_leases).values(link_key=link_key).on_conflict_do_nothing())
        row = connection.execute(
            cluster_leases.update()
            .where(
                cluster_leases.c.link_key == link_key,
                sa.or_(cluster_leases.c.holder.is_(None), cluster_leases.c.expires_at <= now),
            )
            .values(holder=instance_id, token=cluster_leases.c.token + 1, acquired_at=now, expires_at=now + ttl)
            .returning(cluster_leases.c.token)
        ).first()
    if row is None:
        return None
    logger.debug("%s acquired %s with token %d", instance_id, link_key, row.token)
    return Lease(link_key, instance_id, row.token, now, now + ttl)


def renew(engine: Engine, lease: Lease, *, now: float, ttl: float = DEFAULT_LEASE_SECONDS) -> Lease | None:
    """Extend ``lease``; None if it was lost (taken over or released).

    An expired lease that nobody took over yet is renewed too: its token is still current, so no other
    instance can have written for the link in between.
    """
    if not _update_while_held(engine, lease, expires_at=now + ttl):
        return None
    return Lease(lease.link_key, lease.holder, lease.token, lease.acquired_at, now + ttl)


def release(engine: Engine, lease: Lease) -> bool:
    """Give ``lease`` up at once (rebalancing or shutdown); False if it was already lost."""
    return _update_while_held(engine, lease, holder=None, expires_at=0.0)


def _update_while_held(engine: Engine, lease: Lease, **values: object) -> bool:
    """Change the lease's row only while ``lease`` still holds it (same holder and token); False if lost."""
    with writing(engine) as connection:
        limit_idle(connection)  # its row locks must not outlive a pause of this process
        count = connection.execute(
            cluster_leases.update()
            .where(
                cluster_leases.c.link_key == lease.link_key,
                cluster_leases.c.holder == lease.holder,
                cluster_leases.c.token == lease.token,
            )
            .values(**values)
        ).rowcount
    return count == 1


def fenced(connection: sa.Connection, link_key: str, token: int) -> None:
    """Guard a relay state write: call inside the write's transaction, before or after the write.

    Raises :class:`LeaseLost` (so the transaction rolls back) unless ``token`` is still the current lease on
    ``link_key``. The no-op UPDATE locks the lease row until the transaction ends, so a takeover cannot slip in
    between this check and the commit.
    """
    limit_idle(connection)
    count = connection.execute(
        cluster_leases.update()
        .where(
            cluster_leases.c.link_key == link_key,
            cluster_leases.c.token == token,
            cluster_leases.c.holder.is_not(None),
        )
        .values(token=cluster_leases.c.token)
    ).rowcount
    if count != 1:
        raise LeaseLost(link_key, token)


def limit_idle(connection: sa.Connection, seconds: float = FENCE_IDLE_LIMIT) -> None:
    """On PostgreSQL, end this transaction (and its session) if it sits idle for ``seconds``: a transaction
    holding a row lock that other instances need must not outlive a pause of its process."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text(f"SET LOCAL idle_in_transaction_session_timeout = {int(seconds * 1000)}"))


def leases(engine: Engine) -> list[LeaseRow]:
    """Every lease row, for balancing and status."""
    with engine.connect() as connection:
        rows = connection.execute(sa.select(cluster_leases).order_by(cluster_leases.c.link_key))
        return [LeaseRow(r.link_key, r.holder, r.token, r.acquired_at, r.expires_at) for r in rows]


# --- balancing (pure) ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What one instance should do this round: links to try to acquire and links to release."""

    take: tuple[str, ...]
    give_up: tuple[str, ...]


def quota(instance_id: str, live: Iterable[str], link_count: int) -> int:
    """How many links ``instance_id`` should hold: an even share, the remainder going to the first ids."""
    ordered = sorted(set(live))
    if instance_id not in ordered:
        return 0
    share, extra = divmod(link_count, len(ordered))
    return share + (1 if ordered.index(instance_id) < extra else 0)


def _preference(instance_id: str, link_key: str) -> bytes:
    # Rendezvous hashing: each instance ranks free links differently, so instances taking at the same moment
    # mostly reach for different links instead of racing for the same ones.
    return hashlib.sha256(f"{instance_id}\0{link_key}".encode()).digest()


def plan(instance_id: str, live: Iterable[str], links: Iterable[str], holders: Mapping[str, str | None]) -> Plan:
    """Decide which links ``instance_id`` should take or give up so that leases spread evenly.

    ``live`` are the live instances (``instance_id`` among them), ``links`` every link to relay, ``holders``
    each link's live holder (None or absent when free or expired). A link held by a live instance is never
    taken: an overloaded instance gives links up itself, and an underloaded one picks them up once free. Links
    held by dead instances count as free. Repeated by every instance, this converges to each link held by
    exactly one live instance, with holdings differing by at most one.
    """
    live_set = set(live) | {instance_id}
    all_links = sorted(set(links))
    target = quota(instance_id, live_set, len(all_links))
    mine = [link for link in all_links if holders.get(link) == instance_id]
    if len(mine) > target:
        ranked = sorted(mine, key=lambda link: _preference(instance_id, link))
        return Plan(take=(), give_up=tuple(ranked[target:]))
    free = [link for link in all_links if holders.get(link) not in live_set]
    ranked = sorted(free, key=lambda link: _preference(instance_id, link), reverse=True)
    return Plan(take=tuple(ranked[: target - len(mine)]), give_up=())


# --- one instance's membership (the loop the relay supervisor runs) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Changes:
    """What one :meth:`Member.step` changed: leases gained (start relaying) and links lost (stop at once)."""

    acquired: tuple[Lease, ...]
    lost: tuple[str, ...]


@dataclass(slots=True)
class LeaseGuard:
    """A held lease as the link's worker sees it: the token its writes carry, and until when it is known valid.

    The database refuses a stale token (:func:`fenced`), but requests to iCloud and writes to calendars are not
    database writes of the lease's. So the worker also checks, before each of them, that the lease was renewed
    recently enough that nobody can have taken it over: ``valid_until`` is a monotonic time, the start of the
    last successful renewal plus the lease's length. A process resumed after a pause longer than that finds it
    passed and stops before sending anything, even before its renewal is refused.
    """

    link_key: str
    token: int
    valid_until: float  # time.monotonic()
    lost: bool = False

    def valid(self) -> bool:
        return not self.lost and time.monotonic() < self.valid_until

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is still certainly held."""
        if not self.valid():
            raise LeaseLost(self.link_key, self.token)


class Member:
    """One instance in the cluster: heartbeats, renews its leases and rebalances, one :meth:`step` per tick.

    Call :meth:`step` several times per ``lease_seconds`` (blocking I/O: in a thread from asyncio). The caller
    starts a worker for each acquired lease (writing fenced with its token, checking its :meth:`guard`) and stops
    the worker of each lost link; a worker that meets :class:`LeaseLost` in between stops by itself.
    :meth:`leave` on a clean shutdown.
    """

    def __init__(self, engine: Engine, instance_id: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.engine = engine
        self.instance_id = instance_id
        self.lease_seconds = lease_seconds
        self.held: dict[str, Lease] = {}
        self._guards: dict[str, LeaseGuard] = {}

    def guard(self, link_key: str) -> LeaseGuard | None:
        """The guard of a lease held now, for the link's worker."""
        return self._guards.get(link_key)

    def step(self, links: Iterable[str], *, now: float,
             before_release: Callable[[str], None] | None = None) -> Changes:
        """One tick. ``before_release(link_key)`` is called before a link this instance gives up is released,
        so that its worker is stopped first and the next holder never overlaps with it."""
        ttl = self.lease_seconds
        started = time.monotonic()  # a renewal counts from before it was sent
        links = set(links)
        heartbeat(self.engine, self.instance_id, now=now, ttl=ttl)
        lost: list[str] = []
        for link_key in [key for key in self.held if key not in links]:  # unlinked meanwhile: stop relaying it
            self._give_up(link_key, before_release)
            lost.append(link_key)
        for link_key, lease in list(self.held.items()):
            renewed = renew(self.engine, lease, now=now, ttl=ttl)
            if renewed is None:
                logger.warning("%s lost the lease on %s", self.instance_id, link_key)
                del self.held[link_key]
                self._lose(link_key)
                lost.append(link_key)
            else:
                self.held[link_key] = renewed
                self._guards[link_key].valid_until = started + ttl
        holders = {row.link_key: row.live_holder(now) for row in leases(self.engine)}
        holders.update(dict.fromkeys(self.held, self.instance_id))
        decision = plan(self.instance_id, live_instances(self.engine, now=now), links, holders)
        for link_key in decision.give_up:
            self._give_up(link_key, before_release)
            lost.append(link_key)
        acquired: list[Lease] = []
        for link_key in decision.take:
            lease = acquire(self.engine, link_key, self.instance_id, now=now, ttl=ttl)
            if lease is not None:
                self.held[link_key] = lease
                self._guards[link_key] = LeaseGuard(link_key, lease.token, started + ttl)
                acquired.append(lease)
        return Changes(tuple(acquired), tuple(lost))

    def drop(self, link_key: str) -> None:
        """Forget a lease found lost outside :meth:`step` (a worker's write was refused)."""
        self.held.pop(link_key, None)
        self._lose(link_key)

    def _give_up(self, link_key: str, before_release: Callable[[str], None] | None) -> None:
        self._lose(link_key)
        if before_release is not None:
            before_release(link_key)
        release(self.engine, self.held.pop(link_key))

    def _lose(self, link_key: str) -> None:
        guard = self._guards.pop(link_key, None)
        if guard is not None:
            guard.lost = True

    def leave(self) -> None:
        for link_key in list(self._guards):
            self._lose(link_key)
        leave(self.engine, self.instance_id)
        self.held.clear()
