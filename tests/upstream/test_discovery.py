"""Discovery and authentication against the iCloud emulator (icloud.md §1–§3)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from proxy.emulator import EmulatorServer
from proxy.upstream import Account, AuthenticationFailed, UpstreamClient

from .conftest import APP_PASSWORD, APPLE_ID, MAIN_PASSWORD, SHARED_ID, SUBSCRIBED_ID, calendar, event


async def test_discover_follows_the_home_set_to_the_partition_host(emulator: EmulatorServer, account: Account) -> None:
    assert account.principal_url == emulator.discovery_url + "1234567890/principal/"
    # The home set is an absolute URL on another host:port; the client must move there.
    assert account.home_url == emulator.partition_url + "1234567890/calendars/"
    assert urlsplit(account.home_url).netloc != urlsplit(emulator.discovery_url).netloc
    for found in account.calendars:
        assert found.url.startswith(account.home_url) and found.url.endswith("/")


async def test_discover_lists_calendars_with_their_kinds(account: Account) -> None:
    names = {c.name for c in account.calendars}
    # inbox, outbox and notification are collections but not calendars.
    assert names == {"home", "work", SHARED_ID, SUBSCRIBED_ID, "tasks"}

    work = calendar(account, "work")
    assert (work.display_name, work.writable, work.shared, work.subscribed) == ("Work", True, False, False)
    assert work.components == frozenset({"VEVENT"})
    assert work.color == "#FFFFFFFF"
    assert work.ctag and work.sync_token

    shared = calendar(account, SHARED_ID)
    assert (shared.writable, shared.shared, shared.subscribed) == (False, True, False)

    subscribed = calendar(account, SUBSCRIBED_ID)
    assert (subscribed.writable, subscribed.subscribed, subscribed.display_name) == (False, True, "US Holidays")

    tasks = calendar(account, "tasks")
    assert tasks.components == frozenset({"VTODO"}) and tasks.display_name == "Reminders"


async def test_calendar_state_changes_after_a_write(client: UpstreamClient, account: Account) -> None:
    work = calendar(account, "work")
    assert await client.calendar_state(work.url) == (work.ctag, work.sync_token)
    await client.create(work.url + "state.ics", event("state-1"))
    ctag, token = await client.calendar_state(work.url)
    assert ctag != work.ctag and token != work.sync_token


@pytest.mark.parametrize("password", ["wrong-pass-word-xxxx", MAIN_PASSWORD])
async def test_refused_password_is_authentication_failed(emulator: EmulatorServer, password: str) -> None:
    # The emulator's 401 carries two challenges (Basic and X-MobileMe-AuthToken) and an empty body.
    async with UpstreamClient(emulator.discovery_url, APPLE_ID, password, timeout=5) as upstream:
        with pytest.raises(AuthenticationFailed) as caught:
            await upstream.discover()
    assert caught.value.status == 401
    assert password not in str(caught.value)
    assert "app-specific password" in str(caught.value)


async def test_revoked_app_passwords_are_authentication_failed(
    emulator: EmulatorServer, client: UpstreamClient, account: Account
) -> None:
    emulator.set_faults(revoke_app_passwords=True)
    with pytest.raises(AuthenticationFailed) as caught:
        await client.calendar_state(calendar(account, "work").url)
    assert APP_PASSWORD not in str(caught.value)


async def test_redirect_to_the_partition_keeps_method_body_and_credentials(emulator: EmulatorServer) -> None:
    emulator.options.update({"home_redirect": 302})
    async with UpstreamClient(emulator.discovery_url, APPLE_ID, APP_PASSWORD, timeout=5) as upstream:
        # Before discover() a path resolves against the discovery host, which answers 302 to the partition.
        etag = await upstream.create("/1234567890/calendars/work/redirected.ics", event("redirected"))
        fetched = await upstream.get("/1234567890/calendars/work/redirected.ics")
        account = await upstream.discover()
    assert fetched.etag == etag and "UID:redirected" in fetched.text
    assert account.home_url.startswith(emulator.partition_url)
