"""sync-collection, listing and multiget against the iCloud emulator (icloud.md §5)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from proxy.emulator import EmulatorServer
from proxy.upstream import InvalidSyncToken, RemoteCalendar, UpstreamClient

from .conftest import event


async def test_initial_then_incremental_changes(client: UpstreamClient, work: RemoteCalendar) -> None:
    base = urlsplit(work.url).path
    first = await client.changes(work.url, None)
    assert first.complete and first.changed == {} and first.token

    etag_a = await client.create(work.url + "a.ics", event("a"))
    etag_b = await client.create(work.url + "b.ics", event("b"))
    second = await client.changes(work.url, first.token)
    # The emulator, like iCloud, adds a <response> for the collection itself: it must not show up here.
    assert second.changed == {base + "a.ics": etag_a, base + "b.ics": etag_b}
    assert not second.complete and second.deleted == frozenset()

    etag_a2 = await client.update(work.url + "a.ics", event("a", "Changed"), etag_a)
    await client.delete(work.url + "b.ics", etag_b)
    third = await client.changes(work.url, second.token)
    assert third.changed == {base + "a.ics": etag_a2}
    assert third.deleted == frozenset({base + "b.ics"})

    initial = await client.changes(work.url, "")
    assert initial.complete and initial.changed == {base + "a.ics": etag_a2}


@pytest.mark.parametrize("with_element", [False, True])
async def test_refused_token_is_invalid_sync_token(
    emulator: EmulatorServer, client: UpstreamClient, work: RemoteCalendar, with_element: bool
) -> None:
    # iCloud answers a bare 403; CCS adds <valid-sync-token/>.
    emulator.options.update({"sync_token_error_element": with_element})
    with pytest.raises(InvalidSyncToken) as caught:
        await client.changes(work.url, "HwoQEgwAA-not-a-token")
    assert caught.value.status == 403


async def test_listing_matches_the_objects(client: UpstreamClient, work: RemoteCalendar) -> None:
    base = urlsplit(work.url).path
    assert await client.listing(work.url) == {}
    etags = {base + f"{n}.ics": await client.create(work.url + f"{n}.ics", event(f"list-{n}")) for n in range(3)}
    assert await client.listing(work.url) == etags


async def test_fetch_skips_missing_hrefs(client: UpstreamClient, work: RemoteCalendar) -> None:
    base = urlsplit(work.url).path
    etag = await client.create(work.url + "one.ics", event("one"))
    await client.create(work.url + "two.ics", event("two"))
    found = await client.fetch(work.url, [base + "one.ics", base + "gone.ics", work.url + "two.ics"])
    assert set(found) == {base + "one.ics", base + "two.ics"}
    one = found[base + "one.ics"]
    # calendar-data arrives in CDATA; the text is the stored iCalendar.
    assert one.etag == etag and one.href == base + "one.ics" and "UID:one" in one.text
    assert one.text.startswith("BEGIN:VCALENDAR")


async def test_fetch_batches_large_requests(client: UpstreamClient, work: RemoteCalendar) -> None:
    hrefs = [urlsplit(work.url).path + f"bulk-{n}.ics" for n in range(60)]
    for n, href in enumerate(hrefs):
        await client.create(href, event(f"bulk-{n}"))
    found = await client.fetch(work.url, hrefs)
    assert set(found) == set(hrefs)
    assert await client.fetch(work.url, []) == {}


async def test_lagging_object_is_absent_from_fetch_but_readable_directly(
    emulator: EmulatorServer, client: UpstreamClient, work: RemoteCalendar
) -> None:
    emulator.set_faults(visibility_lag_ms=10_000)
    href = urlsplit(work.url).path + "lag.ics"
    etag = await client.create(href, event("lag"))
    assert await client.fetch(work.url, [href]) == {}
    assert (await client.get(href)).etag == etag
