"""Answers larger than ``max_response_bytes`` are not read further (issue 13): one giant object is skipped
with its reason while the rest of its batch is read, a GET of it or a listing too large fails clearly, and
the client goes on working afterwards."""

from __future__ import annotations

import pytest

from proxy.emulator import EmulatorServer
from proxy.upstream import RemoteCalendar, ResponseTooLarge, UpstreamClient

from .conftest import APP_PASSWORD, APPLE_ID, event

CAP = 20_000


async def test_an_object_larger_than_the_cap_is_skipped_and_the_rest_read(
    emulator: EmulatorServer, client: UpstreamClient, work: RemoteCalendar
) -> None:
    await client.create(work.url + "big.ics", event("big", summary="x" * (3 * CAP)))
    small = [f"s{number}.ics" for number in range(4)]
    for name in small:
        await client.create(work.url + name, event(name))
    async with UpstreamClient(emulator.discovery_url, APPLE_ID, APP_PASSWORD, timeout=5,
                              max_response_bytes=CAP) as capped:
        wanted = [work.url + name for name in (small[0], small[1], "big.ics", small[2], small[3])]
        fetched = await capped.fetch(work.url, wanted)
        assert list(fetched) == [capped._path(work.url, url) for url in wanted]  # in the order asked for
        big = fetched[capped._path(work.url, work.url + "big.ics")]
        assert big.text == "" and big.problem is not None and "max_response_bytes" in big.problem
        assert all(f"UID:{name}" in fetched[capped._path(work.url, work.url + name)].text for name in small)
        with pytest.raises(ResponseTooLarge, match="larger than 20,000 bytes"):
            await capped.get(work.url + "big.ics")
        assert "UID:s0.ics" in (await capped.get(work.url + small[0])).text  # the connection pool still works


async def test_a_listing_larger_than_the_cap_fails_clearly(
    emulator: EmulatorServer, client: UpstreamClient, work: RemoteCalendar
) -> None:
    for number in range(20):
        await client.create(work.url + f"e{number}.ics", event(f"e{number}"))
    async with UpstreamClient(emulator.discovery_url, APPLE_ID, APP_PASSWORD, timeout=5,
                              max_response_bytes=2_000) as capped:
        with pytest.raises(ResponseTooLarge, match="PROPFIND"):
            await capped.listing(work.url)
        with pytest.raises(ResponseTooLarge, match="REPORT"):
            await capped.changes(work.url, None)
    assert len(await client.listing(work.url)) == 20
