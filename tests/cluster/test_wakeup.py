"""Cross-instance wake-up: LISTEN/NOTIFY on a real PostgreSQL, in-process on SQLite, and the rescan fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import sqlalchemy as sa

from proxy.cluster.wakeup import Wake, listen, publish
from proxy.database import create_engine


async def next_wake(wakes: AsyncIterator[Wake], *, skip_rescans: bool = True, timeout: float = 1.0) -> Wake:
    async def first() -> Wake:
        async for wake in wakes:
            if wake.link_key is not None or not skip_rescans:
                return wake
        raise AssertionError("wake-up stream ended")

    return await asyncio.wait_for(first(), timeout)


async def test_postgresql_notify_reaches_another_instance_within_a_second(pg_url: str) -> None:
    other_instance = create_engine(pg_url)  # the instance that received the CRM write
    try:
        async with listen(pg_url, poll_interval=30) as wakes:
            # The initial rescan: LISTEN has run, so no notification from now on can be missed.
            assert await next_wake(wakes, skip_rescans=False, timeout=5) == Wake(None)
            latencies = []
            for n in range(20):
                started = time.monotonic()
                await asyncio.to_thread(publish, other_instance, [f"alice/link-{n}"])
                assert await next_wake(wakes) == Wake(f"alice/link-{n}")  # within 1 s, or wait_for fails
                latencies.append(time.monotonic() - started)
            assert max(latencies) < 1.0
    finally:
        other_instance.dispose()


async def test_postgresql_listener_reconnects_and_rescans(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        async with listen(pg_url, poll_interval=30) as wakes:
            await next_wake(wakes, skip_rescans=False)
            await asyncio.to_thread(publish, engine, ["before"])
            assert await next_wake(wakes) == Wake("before")
            with engine.begin() as connection:  # the database drops the listener's session
                killed = connection.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                    )
                ).scalar()
            assert killed == 1
            assert await next_wake(wakes, skip_rescans=False, timeout=5) == Wake(None)
            await asyncio.to_thread(publish, engine, ["after"])
            assert await next_wake(wakes, timeout=5) == Wake("after")
    finally:
        engine.dispose()


async def test_poll_fallback_yields_rescans(pg_url: str) -> None:
    async with listen(pg_url, poll_interval=0.2) as wakes:
        assert await next_wake(wakes, skip_rescans=False) == Wake(None)
        assert await next_wake(wakes, skip_rescans=False) == Wake(None)  # the periodic one


async def test_sqlite_in_process_wakeup(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calrelay.db'}"
    writer = create_engine(url)  # a separate engine on the same file, as the API and the relay have
    try:
        async with listen(url, poll_interval=0.2) as wakes:
            assert await next_wake(wakes, skip_rescans=False) == Wake(None)
            await asyncio.to_thread(publish, writer, ["alice/link-1", "alice/link-1", "bob/link-2"])
            assert await next_wake(wakes) == Wake("alice/link-1")
            assert await next_wake(wakes) == Wake("bob/link-2")
            assert await next_wake(wakes, skip_rescans=False) == Wake(None)  # and the poll fallback
    finally:
        writer.dispose()
