"""Checklist 29 and the fault switches: each fault happens, and stops when switched off."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from proxy.emulator import EmulatorServer
from tests.emulator.conftest import HOME, Dav, event

HOME_CAL = HOME + "home/"
#: a getetag with a value (the collection's own response lists an empty one in its 404 propstat)
ETAG_VALUE = '<getetag xmlns="DAV:">"'


async def ok(dav: Dav) -> int:
    return (await dav.request("PROPFIND", HOME_CAL, "", headers={"Depth": "0"})).status


async def test_throttle_answers_503_with_a_short_retry_after_for_n_seconds(emulator: EmulatorServer, dav: Dav) -> None:
    await emulator.control("POST", "faults", {"throttle_seconds": 0.6, "retry_after": 1})
    throttled = await dav.request("PROPFIND", HOME_CAL, "", headers={"Depth": "0"})
    assert throttled.status == 503 and throttled.headers["Retry-After"] == "1"
    assert "AppleHttpServer" in throttled.text
    # The throttle outlasts the window it advertised only when N > Retry-After; here it ends after N.
    state = await emulator.control("GET", "faults")
    assert 0 < state["throttle_remaining_seconds"] <= 0.6
    await asyncio.sleep(0.7)
    assert await ok(dav) == 207


async def test_throttle_can_use_429_and_is_switched_off(emulator: EmulatorServer, dav: Dav) -> None:
    emulator.set_faults(throttle_seconds=30, throttle_status=429, retry_after=2)
    reply = await dav.request("GET", HOME_CAL + "x.ics")
    assert reply.status == 429 and reply.headers["Retry-After"] == "2"
    await emulator.control("POST", "faults", {"throttle_seconds": 0})
    assert await ok(dav) == 207


async def test_per_account_budget(emulator: EmulatorServer, dav: Dav) -> None:
    emulator.set_faults(budget_per_minute=3)
    statuses = [await ok(dav) for _ in range(5)]
    assert statuses == [207, 207, 207, 503, 503]
    emulator.set_faults(budget_per_minute=0)
    assert await ok(dav) == 207


async def test_random_5xx(emulator: EmulatorServer, dav: Dav) -> None:
    emulator.set_faults(error_rate=1.0)
    statuses = {await ok(dav) for _ in range(5)}
    assert statuses <= {500, 502}
    emulator.set_faults(error_rate=0.0)
    assert await ok(dav) == 207


async def test_dropped_connections(emulator: EmulatorServer, dav: Dav) -> None:
    emulator.set_faults(drop_rate=1.0)
    with pytest.raises(aiohttp.ClientError):
        await ok(dav)
    emulator.set_faults(drop_rate=0.0)
    assert await ok(dav) == 207


async def test_added_latency(emulator: EmulatorServer, dav: Dav) -> None:
    emulator.set_faults(latency_ms=300)
    started = time.monotonic()
    assert await ok(dav) == 207
    assert time.monotonic() - started >= 0.3
    emulator.set_faults(latency_ms=0)
    started = time.monotonic()
    await ok(dav)
    assert time.monotonic() - started < 0.25


def multiget(*names: str) -> str:
    hrefs = "".join(f"<href>{HOME_CAL}{name}</href>" for name in names)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><C:calendar-multiget xmlns="DAV:" '
        f'xmlns:C="urn:ietf:params:xml:ns:caldav"><prop><getetag/></prop>{hrefs}</C:calendar-multiget>'
    )


async def test_visibility_lag_hides_new_objects_from_reports(emulator: EmulatorServer, dav: Dav) -> None:
    emulator.set_faults(visibility_lag_ms=400)
    assert (await dav.put(HOME_CAL + "lag.ics", event("lag"))).status == 201
    assert (await dav.request("GET", HOME_CAL + "lag.ics")).status == 200
    hidden = await dav.report(HOME_CAL, multiget("lag.ics"))
    assert "HTTP/1.1 404 Not Found" in hidden.text and ETAG_VALUE not in hidden.text
    listing = await dav.request("PROPFIND", HOME_CAL, "", headers={"Depth": "1"})
    assert "lag.ics" not in listing.text
    await asyncio.sleep(0.45)
    assert ETAG_VALUE in (await dav.report(HOME_CAL, multiget("lag.ics"))).text
    emulator.set_faults(visibility_lag_ms=0)
    assert (await dav.put(HOME_CAL + "now.ics", event("now"))).status == 201
    assert ETAG_VALUE in (await dav.report(HOME_CAL, multiget("now.ics"))).text


async def test_revoking_app_passwords_through_the_control_api(emulator: EmulatorServer, dav: Dav) -> None:
    await emulator.control("POST", "faults", {"revoke_app_passwords": True})
    assert await ok(dav) == 401
    await emulator.control("DELETE", "faults")
    assert await ok(dav) == 207


async def test_control_api_validates_and_does_not_need_icloud_auth(emulator: EmulatorServer) -> None:
    async with aiohttp.ClientSession() as session:
        url = emulator.discovery_url + "_emulator/faults"
        async with session.post(url, json={"no_such_switch": 1}) as reply:
            assert reply.status == 400
        async with session.post(url, json={"error_rate": 2}) as reply:
            assert reply.status == 400
        async with session.get(url) as reply:
            assert reply.status == 200 and (await reply.json())["error_rate"] == 0
        # The partition host has no control API.
        async with session.get(emulator.partition_url + "_emulator/faults") as reply:
            assert reply.status == 401
