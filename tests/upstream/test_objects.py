"""PUT / GET / DELETE with preconditions against the iCloud emulator (icloud.md §4)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from proxy.emulator import EmulatorServer
from proxy.upstream import (
    Account,
    NotFound,
    PreconditionFailed,
    Rejected,
    RemoteCalendar,
    UpstreamClient,
)

from .conftest import SHARED_ID, calendar, event


async def test_create_get_update_delete(emulator: EmulatorServer, client: UpstreamClient, work: RemoteCalendar) -> None:
    url = work.url + "a.ics"
    etag = await client.create(url, event("uid-a"))
    assert etag.startswith('"') and etag.endswith('"')

    fetched = await client.get(url)
    assert fetched.href == urlsplit(url).path and fetched.etag == etag
    assert "SUMMARY:Meeting" in fetched.text

    new_etag = await client.update(url, event("uid-a", "Moved"), etag)
    assert new_etag != etag
    assert "SUMMARY:Moved" in (await client.get(url)).text

    await client.delete(url, new_etag)
    with pytest.raises(NotFound):
        await client.get(url)
    assert emulator.mail() == []


async def test_paths_resolve_against_the_home_host(client: UpstreamClient, work: RemoteCalendar) -> None:
    path = urlsplit(work.url).path + "by-path.ics"
    etag = await client.create(path, event("by-path"))
    assert (await client.get(path)).etag == etag


async def test_duplicate_create_is_precondition_failed(client: UpstreamClient, work: RemoteCalendar) -> None:
    await client.create(work.url + "dup.ics", event("dup"))
    with pytest.raises(PreconditionFailed) as caught:
        await client.create(work.url + "dup.ics", event("dup"))
    assert caught.value.status == 412


async def test_uid_in_another_calendar_is_precondition_failed(client: UpstreamClient, account: Account) -> None:
    await client.create(calendar(account, "work").url + "x.ics", event("shared-uid"))
    with pytest.raises(PreconditionFailed):
        await client.create(calendar(account, "home").url + "y.ics", event("shared-uid"))


async def test_stale_etag_is_precondition_failed(
    emulator: EmulatorServer, client: UpstreamClient, work: RemoteCalendar
) -> None:
    url = work.url + "stale.ics"
    etag = await client.create(url, event("stale"))
    # iCloud housekeeping (or a sharer) changes the ETag with no write from us.
    await emulator.control("POST", "churn", {"apple_id": "demo@icloud.test", "calendar": "work"})
    with pytest.raises(PreconditionFailed):
        await client.update(url, event("stale", "Changed"), etag)
    with pytest.raises(PreconditionFailed):
        await client.delete(url, etag)
    current = (await client.get(url)).etag
    await client.delete(url, current)


async def test_missing_objects_are_not_found(client: UpstreamClient, work: RemoteCalendar) -> None:
    with pytest.raises(NotFound):
        await client.get(work.url + "missing.ics")
    with pytest.raises(NotFound):
        await client.update(work.url + "missing.ics", event("missing"), '"abc"')
    with pytest.raises(NotFound):
        await client.delete(work.url + "missing.ics", None)
    with pytest.raises(NotFound):
        await client.delete(work.url + "missing.ics", '"abc"')


async def test_delete_without_etag(client: UpstreamClient, work: RemoteCalendar) -> None:
    await client.create(work.url + "plain.ics", event("plain"))
    await client.delete(work.url + "plain.ics", None)
    with pytest.raises(NotFound):
        await client.get(work.url + "plain.ics")


async def test_refusals_are_rejected_with_status_and_excerpt(client: UpstreamClient, account: Account) -> None:
    with pytest.raises(Rejected) as caught:
        await client.create(calendar(account, SHARED_ID).url + "no.ics", event("read-only"))
    assert caught.value.status == 403 and "403" in str(caught.value)

    with pytest.raises(Rejected) as caught:
        await client.create(calendar(account, "work").url + "junk.ics", "not a calendar")
    assert caught.value.status == 400 and "400" in str(caught.value)
