"""The same client against a plain, standards-following CalDAV server (Radicale)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from proxy.upstream import InvalidSyncToken, NotFound, PreconditionFailed, UpstreamClient

from .conftest import Radicale, event


async def test_radicale_round_trip(radicale: Radicale) -> None:
    calendar_url = await radicale.mkcalendar("round-trip")
    async with UpstreamClient(radicale.url, radicale.user, "any", timeout=5) as client:
        account = await client.discover()
        found = next(c for c in account.calendars if c.url == calendar_url)
        assert found.name == "round-trip" and found.writable and not found.shared and not found.subscribed
        assert found.components == frozenset({"VEVENT"})

        base = urlsplit(calendar_url).path
        initial = await client.changes(calendar_url, None)
        assert initial.complete and initial.changed == {}

        etag = await client.create(calendar_url + "a.ics", event("r-a"))
        other = await client.create(calendar_url + "b.ics", event("r-b"))
        with pytest.raises(PreconditionFailed):
            await client.create(calendar_url + "a.ics", event("r-a"))
        step = await client.changes(calendar_url, initial.token)
        assert step.changed == {base + "a.ics": etag, base + "b.ics": other}

        new_etag = await client.update(calendar_url + "a.ics", event("r-a", "Moved"), etag)
        with pytest.raises(PreconditionFailed):
            await client.update(calendar_url + "a.ics", event("r-a", "Again"), etag)
        await client.delete(calendar_url + "b.ics", other)
        last = await client.changes(calendar_url, step.token)
        assert last.changed == {base + "a.ics": new_etag} and last.deleted == frozenset({base + "b.ics"})

        assert await client.listing(calendar_url) == {base + "a.ics": new_etag}
        fetched = await client.fetch(calendar_url, [base + "a.ics", base + "b.ics"])
        assert list(fetched) == [base + "a.ics"] and "SUMMARY:Moved" in fetched[base + "a.ics"].text
        assert (await client.get(base + "a.ics")).etag == new_etag

        # Radicale answers If-Match on a missing object with 412; the client reports it as NotFound.
        with pytest.raises(NotFound):
            await client.update(calendar_url + "b.ics", event("r-b"), other)
        with pytest.raises(NotFound):
            await client.delete(calendar_url + "b.ics", other)
        with pytest.raises(InvalidSyncToken):
            await client.changes(calendar_url, "http://radicale.org/ns/sync/not-a-token")
