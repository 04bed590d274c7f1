"""Each parse reads its TZIDs by its own VTIMEZONEs (proxy.vobject_zones): vobject's process-wide map would
let the first object ever parsed decide how every later one is read."""

from __future__ import annotations

from datetime import UTC, datetime

import vobject
from radicale import item as radicale_item

import plugins.sqlstore  # noqa: F401  (installs proxy.vobject_zones)
from proxy import vobject_zones
from tests.storage.test_sqlstore import BERLIN, vcalendar, vevent

#: A "Europe/Berlin" without its summer time, as a careless client may send it.
WINTER_ONLY = (
    "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n"
    "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"
)
JUNE = vevent("june", "DTSTART;TZID=Europe/Berlin:20310602T090000\r\nDTEND;TZID=Europe/Berlin:20310602T100000\r\n")


def start(text: str) -> datetime:
    return vobject.readOne(text).vevent.dtstart.value.astimezone(UTC)


def test_an_object_is_read_by_its_own_vtimezone_whatever_was_parsed_before() -> None:
    assert start(vcalendar(WINTER_ONLY + JUNE)) == datetime(2031, 6, 2, 8, tzinfo=UTC)
    assert start(vcalendar(BERLIN + JUNE)) == datetime(2031, 6, 2, 7, tzinfo=UTC)
    assert start(vcalendar(WINTER_ONLY + JUNE)) == datetime(2031, 6, 2, 8, tzinfo=UTC)


def test_a_tzid_without_a_vtimezone_is_read_by_the_iana_database() -> None:
    vobject.readOne(vcalendar(WINTER_ONLY + JUNE))
    assert start(vcalendar(JUNE)) == datetime(2031, 6, 2, 7, tzinfo=UTC)


def test_radicales_own_parse_goes_through_it() -> None:
    radicale_item.read_components(vcalendar(WINTER_ONLY + JUNE))
    (component,) = radicale_item.read_components(vcalendar(BERLIN + JUNE))
    assert component.vevent.dtstart.value.astimezone(UTC) == datetime(2031, 6, 2, 7, tzinfo=UTC)


def test_objects_with_the_same_definition_share_one_zone() -> None:
    first = vobject.readOne(vcalendar(BERLIN + JUNE)).vevent.dtstart.value.tzinfo
    again = vobject.readOne(vcalendar(BERLIN + JUNE.replace("june", "other"))).vevent.dtstart.value.tzinfo
    assert first is again
    assert vobject.readOne(vcalendar(WINTER_ONLY + JUNE)).vevent.dtstart.value.tzinfo is not first


def test_definitions_names_each_vtimezone_by_its_text() -> None:
    found = vobject_zones.definitions(vcalendar(BERLIN + WINTER_ONLY.replace("Europe/Berlin", "Office Time")))
    assert set(found) == {"Europe/Berlin", "Office Time"}
    assert vobject_zones.definitions(vcalendar(WINTER_ONLY))["Europe/Berlin"] != found["Europe/Berlin"]


def test_serialising_keeps_the_objects_own_zone() -> None:
    """vobject reads the values back by TZID after writing them out: Radicale serialises an item before it
    works out its time range."""
    winter = vobject.readOne(vcalendar(WINTER_ONLY + JUNE))
    winter.serialize()
    berlin = vobject.readOne(vcalendar(BERLIN + JUNE))
    assert "TZID=Europe/Berlin:20310602T090000" in berlin.serialize()
    assert berlin.vevent.dtstart.value.astimezone(UTC) == datetime(2031, 6, 2, 7, tzinfo=UTC)
    item = radicale_item.Item(collection_path="u/c", vobject_item=vobject.readOne(vcalendar(BERLIN + JUNE)))
    item.prepare()
    assert item.time_range[0] == int(datetime(2031, 6, 2, 7, tzinfo=UTC).timestamp())
