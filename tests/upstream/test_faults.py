"""Throttling, server errors, dropped connections, timeouts and concurrency (icloud.md §6)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from proxy.emulator import EmulatorServer
from proxy.upstream import RemoteCalendar, Throttled, TransientError, UpstreamClient

from .conftest import APP_PASSWORD, APPLE_ID, event


@pytest.mark.parametrize("status", [503, 429])
async def test_throttle_is_throttled_with_retry_after(
    emulator: EmulatorServer, client: UpstreamClient, work: RemoteCalendar, status: int
) -> None:
    emulator.set_faults(throttle_seconds=30, throttle_status=status, retry_after=7)
    with pytest.raises(Throttled) as caught:
        await client.create(work.url + "t.ics", event("t"))
    assert caught.value.status == status
    assert caught.value.retry_after == 7.0


async def test_server_errors_are_transient(
    emulator: EmulatorServer, client: UpstreamClient, work: RemoteCalendar
) -> None:
    emulator.set_faults(error_rate=1.0)
    with pytest.raises(TransientError) as caught:
        await client.changes(work.url, None)
    assert caught.value.status in (500, 502)


async def test_dropped_connections_are_transient(
    emulator: EmulatorServer, client: UpstreamClient, work: RemoteCalendar
) -> None:
    emulator.set_faults(drop_rate=1.0)
    with pytest.raises(TransientError):
        await client.create(work.url + "d.ics", event("d"))
    with pytest.raises(TransientError):
        await client.listing(work.url)


async def test_timeouts_are_transient(emulator: EmulatorServer, work: RemoteCalendar) -> None:
    emulator.set_faults(latency_ms=1500)
    async with UpstreamClient(emulator.discovery_url, APPLE_ID, APP_PASSWORD, timeout=0.3) as upstream:
        with pytest.raises(TransientError):
            await upstream.calendar_state(work.url)


async def test_connection_refused_is_transient() -> None:
    async with UpstreamClient("http://127.0.0.1:9/", APPLE_ID, APP_PASSWORD, timeout=2) as upstream:
        with pytest.raises(TransientError):
            await upstream.discover()


async def test_fifty_concurrent_creates_with_latency(
    emulator: EmulatorServer, client: UpstreamClient, work: RemoteCalendar
) -> None:
    emulator.set_faults(latency_ms=100)
    base = urlsplit(work.url).path
    etags = await asyncio.gather(*(client.create(f"{base}c{n}.ics", event(f"c{n}")) for n in range(50)))
    assert len(set(etags)) == 50
    listing = await client.listing(work.url)
    assert listing == {f"{base}c{n}.ics": etag for n, etag in enumerate(etags)}
    updated = await asyncio.gather(
        *(client.update(f"{base}c{n}.ics", event(f"c{n}", "Again"), etag) for n, etag in enumerate(etags))
    )
    assert not set(updated) & set(etags)
