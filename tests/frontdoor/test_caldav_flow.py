"""End to end through the front door with python-caldav: what a CRM and Apple Calendar do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import caldav
import requests
from caldav.elements import cdav, dav

from proxy.keys import ENGINE
from proxy.model import CALENDAR_KIND_PROP
from tests.helpers import event, getctag, mkcalendar, proppatch_kind

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_discovery_from_well_known(calrelay):
    anonymous = requests.get(calrelay.url + ".well-known/caldav", allow_redirects=False, timeout=10)
    assert anonymous.status_code == 301 and anonymous.headers["Location"] == "/"
    client = caldav.DAVClient(
        url=calrelay.url + ".well-known/caldav", username="alice", password=calrelay.password("alice")
    )
    principal = client.principal()
    assert str(principal.url).endswith("/alice/")
    assert principal.get_property(cdav.CalendarHomeSet()).endswith("/alice/")
    assert principal.calendar_user_address_set()


def test_missing_credentials_are_challenged_at_once(calrelay):
    response = requests.request("PROPFIND", calrelay.url, timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert "credentials" in response.text


def test_booking_calendar_appointments_and_reports(calrelay):
    alice = calrelay.auth("alice")
    created = mkcalendar(calrelay.url + "alice/sales/", alice, "Sales", kind="round-robin")
    assert created.status_code == 201, created.text
    calendar = calrelay.client("alice").calendar(url=calrelay.url + "alice/sales/")
    assert calendar.get_properties([dav.DisplayName()])[dav.DisplayName().tag] == "Sales"
    ctag_before = getctag(str(calendar.url), alice)

    calendar.save_event(event("appt-1", START))
    calendar.save_event(event("block-1", START + timedelta(hours=2), kind="BLOCKED"))
    calendar.save_event(event("late", START + timedelta(days=10)))
    assert getctag(str(calendar.url), alice) != ctag_before

    found = calendar.search(start=START - timedelta(hours=1), end=START + timedelta(hours=4), event=True)
    assert sorted(e.icalendar_component["UID"] for e in found) == ["appt-1", "block-1"]

    initial = calendar.objects_by_sync_token(load_objects=False)
    assert len(list(initial)) == 3
    calendar.save_event(event("appt-2", START + timedelta(days=1)))
    changed = calendar.objects_by_sync_token(sync_token=initial.sync_token, load_objects=False)
    assert [str(o.url).rsplit("/", 1)[-1] for o in changed] == ["appt-2.ics"]

    freebusy = calendar.freebusy_request(START - timedelta(hours=1), START + timedelta(hours=4))
    periods = [p for fb in freebusy.icalendar_instance.walk("VFREEBUSY") for p in fb.get("FREEBUSY", [])]
    assert periods, "free-busy-query must report the busy appointment"

    feed = requests.get(str(calendar.url), auth=alice, timeout=10)
    assert feed.status_code == 200
    assert feed.headers["Content-Type"].startswith("text/calendar")
    assert feed.text.count("BEGIN:VEVENT") == 4

    event_object = calendar.event_by_uid("appt-1")
    event_object.delete()
    assert len(calendar.events()) == 3


def test_kind_set_by_proppatch_is_stored(calrelay):
    alice = calrelay.auth("alice")
    assert mkcalendar(calrelay.url + "alice/classes/", alice, "Classes").status_code == 201
    assert proppatch_kind(calrelay.url + "alice/classes/", alice, "class-booking").status_code == 207
    engine = calrelay.app[ENGINE]
    infos = calrelay.run(engine.call(engine.list_calendars, "alice"))
    assert {i.path: i.props.get(CALENDAR_KIND_PROP) for i in infos} == {"/alice/classes/": "class-booking"}


def test_move_between_calendars(calrelay):
    alice = calrelay.auth("alice")
    for name in ("one", "two"):
        assert mkcalendar(calrelay.url + f"alice/{name}/", alice, name, kind="service").status_code == 201
    client = calrelay.client("alice")
    client.calendar(url=calrelay.url + "alice/one/").save_event(event("moving", START))
    response = requests.request(
        "MOVE", calrelay.url + "alice/one/moving.ics", auth=alice, timeout=10,
        headers={"Destination": calrelay.url + "alice/two/moving.ics"},
    )
    assert response.status_code in (201, 204), response.text
    assert [e.icalendar_component["UID"] for e in client.calendar(url=calrelay.url + "alice/two/").events()] == [
        "moving"
    ]
