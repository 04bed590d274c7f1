"""python-caldav's normal discovery against the emulator: principal, partition host, calendars, event CRUD."""

from __future__ import annotations

import asyncio
from datetime import datetime
from urllib.parse import urlsplit

import caldav

from proxy.emulator import EmulatorServer
from tests.emulator.conftest import APP_PASSWORD, APPLE_ID, DSID


def round_trip(discovery_url: str) -> dict[str, object]:
    seen: dict[str, object] = {}
    with caldav.DAVClient(url=discovery_url, username=APPLE_ID, password=APP_PASSWORD) as client:
        principal = client.principal()
        seen["principal"] = str(principal.url)
        calendars = principal.calendars()
        seen["calendars"] = {str(c.url).rstrip("/").rsplit("/", 1)[-1]: c.get_display_name() for c in calendars}
        seen["calendar_urls"] = [str(c.url) for c in calendars]
        home = next(c for c in calendars if str(c.url).endswith("/home/"))
        created = home.save_event(
            dtstart=datetime(2026, 5, 1, 10), dtend=datetime(2026, 5, 1, 11), summary="Booked", uid="caldav-1"
        )
        found = home.search(start=datetime(2026, 4, 1), end=datetime(2026, 6, 1), event=True)
        seen["found"] = [str(e.icalendar_component["uid"]) for e in found]
        created.icalendar_component["summary"] = "Rebooked"
        created.save()
        seen["summary"] = str(home.event_by_uid("caldav-1").icalendar_component["summary"])
        created.delete()
        seen["after_delete"] = len(home.events())
        seen["new_calendar"] = str(principal.make_calendar(name="Project", cal_id="project").url)
    return seen


async def test_python_caldav_discovers_moves_to_the_partition_and_round_trips(emulator: EmulatorServer) -> None:
    seen = await asyncio.to_thread(round_trip, emulator.discovery_url)
    assert seen["principal"] == f"{emulator.discovery_url}{DSID}/principal/"
    partition = urlsplit(emulator.partition_url)
    for url in seen["calendar_urls"]:  # type: ignore[attr-defined]
        assert (urlsplit(url).hostname, urlsplit(url).port) == (partition.hostname, partition.port)
    names = seen["calendars"]
    assert isinstance(names, dict)
    assert {"home", "work", "tasks"} <= set(names) and names["tasks"] == "Reminders"
    assert seen["found"] == ["caldav-1"]
    assert seen["summary"] == "Rebooked"
    assert seen["after_delete"] == 0
    assert str(seen["new_calendar"]).startswith(f"{emulator.partition_url}{DSID}/calendars/project")
