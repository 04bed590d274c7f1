"""Benchmark of the cluster building blocks on a given database: wake-up latency, lease and budget throughput.

- wake-up: time from ``publish`` (on a separate engine, as another instance would) to the listener's wake;
- leases: acquisitions and renewals per second of ``--links`` links by one instance, and fenced write
  transactions per second from ``--threads`` threads (each a write guarded by its lease);
- budget: ``take_db`` calls per second on one Apple ID from ``--threads`` threads (the shared row is the
  contention point all instances meet).

    python bench/cluster.py --database postgresql+psycopg://postgres@127.0.0.1:PORT/DB [--samples 200]
    python bench/cluster.py --database sqlite:////tmp/bench.db
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

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


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--links", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
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
