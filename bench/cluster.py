"""Benchmark of the cluster building blocks on a given database: wake-up latency, lease and budget throughput.

- wake-up: time from ``publish`` (on a separate engine, as another instance would) to the listener's wake;
- leases: acquisitions and renewals per second of ``--links`` links by one instance, and fenced write
  transactions per second from ``--threads`` threads (each a write guarded by its lease);
- budget: ``take_db`` calls per second on one Apple ID from ``--threads`` threads (the shared row is the
  contention point all instances meet).

    python bench/cluster.py --database postgresql+psycopg://postgres@127.0.0.1:PORT/DB [--samples 200]
    python bench/cluster.py --database sqlite:////tmp/bench.db

With ``--relay``, the relay itself across real ``calrelay serve`` processes on that PostgreSQL server (each run
in a database of its own, created and dropped): for 1 and 3 instances, ``--links`` users each linked to an
account of one iCloud emulator (in this process), CRM appointments written round-robin over the instances and
the users:

- push latency: one appointment at a time, from the PUT's answer to the object being in iCloud (p50, p95);
- appointments/s: a burst written by 8 threads, from the first PUT to the last object in iCloud;
- takeover (3 instances): the holder of a link SIGKILLed, until another instance holds its lease, and until an
  appointment written right after the kill is in iCloud; with the default 15 s lease unless ``--lease``.

    python -m bench.cluster --relay --database postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from proxy.cluster import leases
from proxy.cluster.budget import Policy, apple_id_budgets, take_db
from proxy.cluster.leases import cluster_leases
from proxy.cluster.wakeup import listen, publish
from proxy.database import create_engine, metadata, writing

counters = sa.Table(
    "bench_fenced_counters",
    sa.MetaData(),  # the bench's own table, not part of calrelay's schema
    sa.Column("link_key", sa.String(400), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)


async def wakeup_latency(url: str, samples: int) -> list[float]:
    other = create_engine(url)
    latencies = []
    try:
        async with listen(url, poll_interval=3600) as wakes:
            await anext(wakes)  # listening from here on
            for n in range(samples):
                started = time.perf_counter()
                await asyncio.to_thread(publish, other, [f"bench/{n}"])
                async for wake in wakes:
                    if wake.link_key == f"bench/{n}":
                        break
                latencies.append(time.perf_counter() - started)
    finally:
        other.dispose()
    return latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def relay_figures(server: str, count: int, links: int, latency_samples: int, burst: int, lease: float) -> None:
    """One cluster of ``count`` instances: push latency, throughput and (with several) takeover after SIGKILL."""
    from cryptography.fernet import Fernet
    from sqlalchemy.engine import make_url

    from tests.cluster.instances import Cluster, EmulatorThread, accounts, link, wait_until
    from tests.helpers import event, put

    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    database = make_url(server).set(database=name).render_as_string(hide_password=False)
    start = datetime(2027, 6, 1, 8, tzinfo=UTC)
    users = [f"user{n}" for n in range(links)]
    crm = ("crm", "crm-secret")
    with tempfile.TemporaryDirectory() as root, EmulatorThread(accounts=accounts(links)) as emulator:
        cluster = Cluster(Path(root), database, count, lease, Fernet.generate_key().decode())
        try:
            cluster.start()
            for n, user in enumerate(users):
                link(cluster.instances[n % count], user, emulator, f"demo{n}@icloud.test")
            for user in users:
                cluster.wait_holder(user, lease * 2)
            held = Counter(cluster.holder(user).name for user in users)  # type: ignore[union-attr]
            numbers = itertools.count(1)

            def write(instance_index: int, user: str) -> str:
                number = next(numbers)  # atomic: the burst's threads each get their own
                uid = f"bench-{number}"
                body = event(uid, start + timedelta(hours=number))
                assert put(cluster.instances[instance_index].url + f"{user}/sales/{uid}.ics", crm, body).ok
                return uid

            latencies = []
            for n in range(latency_samples):
                uid = write(n % count, users[n % links])
                began = time.perf_counter()
                wait_until(lambda uid=uid: uid in emulator.uids(), 30, uid, interval=0.002)
                latencies.append(time.perf_counter() - began)
            began = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(write, [n % count for n in range(burst)], [users[n % links] for n in range(burst)]))
            written = time.perf_counter() - began
            wait_until(lambda: len(emulator.uids()) >= latency_samples + burst, 300, "the burst in iCloud", 0.01)
            relayed = time.perf_counter() - began
            print(f"{count} instance(s), {links} links (held {dict(sorted(held.items()))}):")
            print(f"  push latency        p50 {statistics.median(latencies) * 1000:6.0f} ms   "
                  f"p95 {percentile(latencies, 0.95) * 1000:6.0f} ms   ({latency_samples} appointments, one at a time)")
            print(f"  burst of {burst}       written {burst / written:5.0f}/s   relayed {burst / relayed:5.0f}/s "
                  f"(first PUT to last object in iCloud, {relayed:.1f} s)")
            if count > 1:
                victim = cluster.holder(users[0])
                assert victim is not None
                others = [n for n, instance in enumerate(cluster.instances) if instance is not victim]
                killed = time.time()
                victim.kill()
                uid = write(others[0], users[0])
                cluster.wait_holder(users[0], lease * 3, other_than=[victim])
                taken = cluster.lease(users[0])[2] - killed
                wait_until(lambda: uid in emulator.uids(), lease * 3, "the write after the kill", 0.01)
                pushed = time.time() - killed
                print(f"  takeover after SIGKILL   lease taken {taken:5.1f} s   write made at the kill in iCloud "
                      f"{pushed:5.1f} s   (lease {lease:g} s)")
        finally:
            cluster.stop()
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--links", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--relay", action="store_true", help="bench the relay across calrelay serve processes")
    parser.add_argument("--relay-links", type=int, default=6)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--lease", type=float, default=15.0)
    args = parser.parse_args()
    if args.relay:
        for count in (1, 3):
            relay_figures(args.database, count, args.relay_links, min(args.samples, 60), args.burst, args.lease)
        return
    engine = create_engine(args.database, pool_size=args.threads + 2)
    # Rows of this run only: the database may be a real one; the bench leaves it as it found it.
    run = uuid.uuid4().hex[:8]
    metadata.create_all(engine)
    counters.create(engine, checkfirst=True)

    latencies = sorted(asyncio.run(wakeup_latency(args.database, args.samples)))
    p50, p95 = statistics.median(latencies), latencies[int(len(latencies) * 0.95) - 1]
    worst = latencies[-1]
    print(f"wake-up publish->wake   p50 {p50 * 1000:6.2f} ms   p95 {p95 * 1000:6.2f} ms   max {worst * 1000:6.2f} ms")

    now = time.time()
    started = time.perf_counter()
    held = [leases.acquire(engine, f"bench-{run}-{n}", f"bench-{run}", now=now) for n in range(args.links)]
    print(f"lease acquire           {rate(args.links, time.perf_counter() - started)}")
    started = time.perf_counter()
    for lease in held:
        assert lease is not None and leases.renew(engine, lease, now=now + 1) is not None
    print(f"lease renew             {rate(args.links, time.perf_counter() - started)}")

    def fenced_writes(offset: int) -> int:
        done = 0
        for lease in held[offset :: args.threads]:
            assert lease is not None
            with writing(engine) as connection:
                leases.fenced(connection, lease.link_key, lease.token)
                connection.execute(counters.insert().values(link_key=lease.link_key, count=1))
            done += 1
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        total = sum(pool.map(fenced_writes, range(args.threads)))
    print(f"fenced write txn        {rate(total, time.perf_counter() - started)}  ({args.threads} threads)")

    policy = Policy(rate=1e9, burst=1e9)
    per_thread = args.links // args.threads

    def spend(_: int) -> int:
        return sum(take_db(engine, f"bench-{run}@icloud.com", now=now, policy=policy) == 0.0 for _ in range(per_thread))

    started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        granted = sum(pool.map(spend, range(args.threads)))
    print(f"budget take, one row    {rate(granted, time.perf_counter() - started)}  ({args.threads} threads)")
    with writing(engine) as connection:
        connection.execute(cluster_leases.delete().where(cluster_leases.c.link_key.like(f"bench-{run}-%")))
        connection.execute(apple_id_budgets.delete().where(apple_id_budgets.c.apple_id == f"bench-{run}@icloud.com"))
    counters.drop(engine)
    engine.dispose()


if __name__ == "__main__":
    main()
