"""CRM -> iCloud, end to end against the emulator (issue 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import requests

from tests.helpers import event, put
from tests.relay.conftest import wait_until

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ATTENDEES = (
    "ORGANIZER;CN=Sales:mailto:sales@crm.test\r\n"
    "ATTENDEE;CN=Jane Client;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:jane@client.test\r\n"
)


def test_appointment_create_update_delete_reach_icloud(linked):
    crm = linked.relay.auth("crm")
    url = linked.url + "alice/sales/appt-1.ics"
    assert put(url, crm, event("appt-1", START, summary="Demo call")).status_code == 201
    wait_until(lambda: "appt-1" in linked.icloud(), message="appointment in iCloud")
    assert "SUMMARY:Demo call" in linked.icloud()["appt-1"]
    assert "X-CALRELAY" not in linked.icloud()["appt-1"]

    assert put(url, crm, event("appt-1", START + timedelta(hours=1), summary="Moved call")).status_code == 204
    wait_until(lambda: "SUMMARY:Moved call" in linked.icloud().get("appt-1", ""), message="update in iCloud")

    assert requests.delete(url, auth=crm, timeout=10).status_code in (200, 204)
    wait_until(lambda: "appt-1" not in linked.icloud(), message="deletion in iCloud")
    assert linked.status()["pending"] == []


def test_blocked_slots_and_simple_calendars_never_leave(linked):
    crm = linked.relay.auth("crm")
    assert put(linked.url + "alice/sales/block.ics", crm, event("block", START, kind="BLOCKED")).status_code == 201
    assert put(linked.url + "alice/intro/simple.ics", crm, event("simple", START)).status_code == 201
    assert put(linked.url + "alice/sales/marker.ics", crm, event("marker", START)).status_code == 201
    wait_until(lambda: "marker" in linked.icloud(), message="the marker appointment")
    events = linked.icloud()
    assert "block" not in events and "simple" not in events


def test_appointment_turned_blocked_is_removed_from_icloud(linked):
    crm = linked.relay.auth("crm")
    url = linked.url + "alice/sales/turn.ics"
    assert put(url, crm, event("turn", START)).status_code == 201
    wait_until(lambda: "turn" in linked.icloud())
    assert put(url, crm, event("turn", START, kind="BLOCKED")).status_code == 204
    wait_until(lambda: "turn" not in linked.icloud(), message="removed after turning blocked")


def test_attendees_cause_no_invitation_mail(linked):
    crm = linked.relay.auth("crm")
    assert put(linked.url + "alice/sales/meet.ics", crm, event("meet", START, extra=ATTENDEES)).status_code == 201
    wait_until(lambda: "meet" in linked.icloud())
    pushed = linked.icloud()["meet"].replace("\r\n ", "").replace("\n ", "")
    # The default attendee policy: people are named in the description, never sent as ATTENDEEs.
    assert "ATTENDEE" not in pushed and "ORGANIZER" not in pushed
    assert "With: Jane Client <jane@client.test>" in pushed
    assert linked.emulator.mail() == []


def test_moving_between_booking_calendars_keeps_one_icloud_copy(linked):
    crm = linked.relay.auth("crm")
    from tests.helpers import mkcalendar

    assert mkcalendar(linked.url + "alice/support/", crm, "Support", kind="service").status_code == 201
    assert put(linked.url + "alice/sales/mv.ics", crm, event("mv", START)).status_code == 201
    wait_until(lambda: "mv" in linked.icloud())
    passes = linked.worker().push_passes
    moved = requests.request("MOVE", linked.url + "alice/sales/mv.ics", auth=crm, timeout=10,
                             headers={"Destination": linked.url + "alice/support/mv.ics"})
    assert moved.status_code == 201
    wait_until(lambda: linked.worker().push_passes > passes, message="a push pass that saw the move")
    assert list(linked.icloud()).count("mv") == 1
    assert linked.status()["pending"] == []


def test_crm_edits_of_an_icloud_born_event_flow_back_with_its_attendees(linked):
    from tests.relay.test_pull import INVITE, icloud_put, mirror, pulled

    icloud_put(linked, "work", "review.ics", event("review", START, summary="Review", extra=INVITE))
    text = pulled(linked, lambda: mirror(linked).get("review"), "imported as a blocked slot")
    crm = linked.relay.auth("crm")
    mirror_url = linked.url + "alice/icloud-work/review.ics"
    invitations = len(linked.emulator.mail())  # the organizer's own invitation, sent when it was created
    moved = text.replace("SUMMARY:Review", "SUMMARY:Review (moved by the CRM)")
    moved = moved.replace("DTSTART:20261201T090000Z", "DTSTART:20261201T091500Z")
    assert put(mirror_url, crm, moved).status_code == 204
    wait_until(lambda: "moved by the CRM" in linked.icloud().get("review", ""), message="CRM edit in iCloud")
    in_icloud = linked.icloud()["review"].replace("\r\n ", "").replace("\n ", "")
    assert "DTSTART:20261201T091500Z" in in_icloud
    assert "mailto:other@work.test" in in_icloud and "X-CALRELAY" not in in_icloud  # iCloud's people kept
    assert len(linked.emulator.mail()) == invitations  # calrelay's update mailed nobody

    assert requests.delete(mirror_url, auth=crm, timeout=10).status_code in (200, 204)
    wait_until(lambda: "review" not in linked.icloud(), message="CRM deletion in iCloud")
