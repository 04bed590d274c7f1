"""Discovery is cached (15 minutes): polls and linking do not discover the account every time, and the answer
is forgotten on 401, 404 and link changes. Counted on the emulator's request log."""

from __future__ import annotations

import dataclasses
import time
from urllib.parse import urlsplit

import pytest
import requests

from proxy.keys import RELAY, STATE
from proxy.relay.locate import locate, missing_message
from proxy.upstream import Account, RemoteCalendar
from proxy.upstream.discovery import DiscoveryCache
from tests.relay.conftest import APP_PASSWORD, APPLE_ID, Linked, make_linked, wait_until

OVERRIDES = {"upstream": {"poll_interval": 1.0, "min_backoff": 0.2, "max_backoff": 2.0}}
DISCOVERY = ("PROPFIND", "/")  # the first of its three requests; nothing else asks for the root


def _calendar(url: str) -> RemoteCalendar:
    return RemoteCalendar(url, url.rstrip("/").rsplit("/", 1)[-1], "x", None, frozenset({"VEVENT"}), True, False,
                          False, None, None)


ACCOUNT = Account("https://p1.example/1/principal/", "https://p1.example/1/calendars/",
                  (_calendar("https://p1.example/1/calendars/work/"),))


# -- the cache and the locating, pure ------------------------------------------------------------------------


def test_cache_answers_within_its_time_to_live_for_the_same_password_only():
    now = [1000.0]
    cache = DiscoveryCache(ttl=900, clock=lambda: now[0])
    cache.put("https://caldav.icloud.com/", "A@icloud.com", "pw-1", ACCOUNT)
    assert cache.get("https://caldav.icloud.com", "a@icloud.com", "pw-1") is ACCOUNT  # same account, spelled apart
    assert cache.get("https://caldav.icloud.com/", "a@icloud.com", "pw-2") is None  # asking verifies credentials
    assert cache.get("https://caldav.icloud.com/", "a@icloud.com", "pw-1", not_before=1000.5) is None
    now[0] += 899
    assert cache.get("https://caldav.icloud.com/", "a@icloud.com", "pw-1") is ACCOUNT
    now[0] += 1
    assert cache.get("https://caldav.icloud.com/", "a@icloud.com", "pw-1") is None
    cache.put("https://caldav.icloud.com/", "a@icloud.com", "pw-1", ACCOUNT)
    cache.invalidate("https://caldav.icloud.com/", "A@ICLOUD.COM", "test")
    assert cache.get("https://caldav.icloud.com/", "a@icloud.com", "pw-1") is None


def test_cache_never_holds_the_password_itself():
    cache = DiscoveryCache()
    cache.put("https://caldav.icloud.com/", "a@icloud.com", "secret-password-1", ACCOUNT)
    assert "secret-password-1" not in repr(cache.__dict__)


def test_locate_follows_a_moved_host_and_reports_a_calendar_that_is_gone():
    moved = dataclasses.replace(ACCOUNT, home_url="https://p9.example/1/calendars/",
                                calendars=(_calendar("https://p9.example/1/calendars/work/"),))
    found = locate(moved, ["https://p1.example/1/calendars/work/", "https://p1.example/1/calendars/home/"])
    assert found == {"https://p1.example/1/calendars/work/": "https://p9.example/1/calendars/work/",
                     "https://p1.example/1/calendars/home/": None}
    # Percent-encoding does not make a calendar look gone.
    assert locate(ACCOUNT, ["https://p1.example/1/calendars/w%6Frk"]) == {
        "https://p1.example/1/calendars/w%6Frk": "https://p1.example/1/calendars/work/"}


# -- against the emulator ------------------------------------------------------------------------------------


def _discoveries(linked: Linked) -> int:
    return sum(1 for request in list(linked.emulator.emulator.request_log) if request[:2] == DISCOVERY)


@pytest.fixture
def linked(calrelay_factory) -> Linked:
    return make_linked(calrelay_factory(overrides=OVERRIDES))


def test_listing_then_linking_then_polling_discovers_once(calrelay_factory):
    relay = calrelay_factory(overrides=OVERRIDES)
    response = requests.post(relay.url + "api/v1/users/alice/icloud-calendars", auth=relay.auth("crm"),
                             json={"apple_id": APPLE_ID, "app_password": APP_PASSWORD}, timeout=30)
    assert response.status_code == 200, response.text
    linked = make_linked(relay)
    linked.passes(3)
    assert _discoveries(linked) == 1  # the listing's answer served the link and every poll since
    # A wrong password is never answered from the cache: asking verifies the credentials.
    response = requests.post(relay.url + "api/v1/users/alice/icloud-calendars", auth=relay.auth("crm"),
                             json={"apple_id": APPLE_ID, "app_password": "zzzz-zzzz-zzzz-zzzz"}, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "credentials_rejected"
    assert _discoveries(linked) == 2


def test_polls_discover_again_only_when_the_answer_expires(linked):
    linked.passes(2)
    before = _discoveries(linked)
    cache = linked.relay.app[RELAY].context.discovery
    cache.clock = lambda: time.time() + cache.ttl  # fifteen minutes later
    linked.passes(2)
    assert _discoveries(linked) == before + 1  # once, then the new answer serves the next poll


def test_a_calendar_deleted_in_icloud_is_reported_and_no_longer_polled(linked):
    linked.passes(1)
    before = _discoveries(linked)
    store = linked.emulator.emulator.store
    (state,) = store.accounts.values()

    async def delete() -> None:
        store.delete_calendar(state, state.collections["home"])

    linked.relay.run(delete())
    # The 404 forgets the discovery; the next pass discovers again and finds the calendar gone.
    wait_until(lambda: any(c["last_error"] == missing_message("home") for c in linked.status()["calendars"]),
               timeout=30, message="the deleted calendar reported")
    assert _discoveries(linked) == before + 1
    log = linked.emulator.emulator.request_log
    log.clear()
    linked.passes(2)
    assert not [request for request in log if "/calendars/home/" in request[1]]  # not asked about again
    assert _discoveries(linked) == 0  # the fresh answer stands for its fifteen minutes
    work = next(c for c in linked.status()["calendars"] if c["name"] == "work")
    assert work["last_error"] is None


def test_refused_credentials_forget_the_answer(linked):
    cache = linked.relay.app[RELAY].context.discovery
    assert cache.get(linked.emulator.discovery_url, APPLE_ID, APP_PASSWORD) is not None
    linked.emulator.set_faults(revoke_app_passwords=True)
    wait_until(lambda: linked.status()["state"] == "needs-reconnect", timeout=30, message="needs-reconnect")
    assert cache.get(linked.emulator.discovery_url, APPLE_ID, APP_PASSWORD) is None


def test_a_link_changed_by_another_process_is_discovered_again(linked):
    linked.passes(1)
    before = _discoveries(linked)
    db = linked.relay.app[STATE].db
    old = linked.worker()
    # What `calrelay link` in another process does: a new version of the link in the database.
    db.save_link(dataclasses.replace(db.link("alice"), updated_at=time.time()), db.link_calendars("alice"))
    wait_until(lambda: linked.worker() is not None and linked.worker() is not old and linked.worker().passes >= 1,
               timeout=30, message="the relay restarted for the changed link")
    assert _discoveries(linked) == before + 1


def test_a_home_moved_to_another_host_is_followed(linked):
    linked.passes(1)
    emulator = linked.emulator.emulator
    old_host = urlsplit(emulator.partition_url).netloc
    # iCloud moves the account to another partition host: the principal now names it (here: the same port
    # under another name, so the requests show which host they went to).
    emulator.partition_url = emulator.partition_url.replace("localhost", "127.0.0.1")
    new_host = urlsplit(emulator.partition_url).netloc
    assert new_host != old_host
    cache = linked.relay.app[RELAY].context.discovery
    cache.clock = lambda: time.time() + cache.ttl  # the answer of fifteen minutes ago expires
    emulator.request_log.clear()
    linked.passes(2)
    hosts = {host for _, path, host in list(emulator.request_log) if "/calendars/work/" in path}
    assert hosts == {new_host}, hosts
    assert all(c["last_error"] is None for c in linked.status()["calendars"])
