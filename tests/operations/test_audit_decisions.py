"""Every relay decision is in the audit trail with its reason, beyond the scripted conversation of test_audit:
an iCloud edit a one-way link does not apply, Apple's housekeeping, an event outside the sync window, a UID in
two booking calendars or taken by an iCloud event, a move between booking calendars, a CRM appointment deleted
in iCloud (kept, then brought back). Each runs against the emulator over real HTTP; states seen again on later
passes are not noted again."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import requests

from proxy.relay.transforms import remote_name
from tests.helpers import event, mkcalendar, put
from tests.operations.conftest import START, activity, decisions
from tests.operations.test_metrics import scrape, value
from tests.relay.conftest import Linked, make_linked, wait_until
from tests.relay.test_pull import icloud_delete, icloud_put, mirror

FAST = {"upstream": {"poll_interval": 1.0, "min_backoff": 0.2, "max_backoff": 2.0}}


def passes(linked: Linked, count: int = 2) -> None:
    """Let ``count`` more complete relay passes run (each pulls and pushes)."""
    for _ in range(count):
        before = linked.worker().passes
        linked.sync_now()
        wait_until(lambda before=before: linked.worker().passes > before, message="a relay pass")


def noted(linked: Linked, uid: str, decision: str) -> dict:
    """The trail's entry for ``uid`` with ``decision``, once it is there."""
    return wait_until(lambda: next((e for e in activity(linked, uid=uid) if e["decision"] == decision), None),
                      timeout=30, message=f"{decision} of {uid}: {decisions(linked, uid=uid)}")


def created(linked: Linked, uid: str, calendar: str = "sales", when: datetime = START) -> str:
    url = linked.url + f"alice/{calendar}/{uid}.ics"
    assert put(url, linked.relay.auth("crm"), event(uid, when)).status_code == 201
    noted(linked, uid, "created")
    return url


def test_an_icloud_edit_a_one_way_link_does_not_apply(calrelay_factory):
    linked = make_linked(calrelay_factory(overrides=FAST), mode="one-way")
    created(linked, "appt")
    before = scrape(linked.url, auth=linked.relay.auth("crm"))
    icloud_put(linked, "work", remote_name("appt"), event("appt", START + timedelta(hours=2), summary="Moved"))
    linked.sync_now()
    entry = noted(linked, "appt", "not-applied")
    assert "one-way" in entry["reason"] and "keeps its version" in entry["reason"]
    assert entry["icloud_calendar"] == "work" and entry["calendar"] == "/alice/sales/"
    passes(linked)
    assert decisions(linked, uid="appt") == [("created", "appt"), ("not-applied", "appt")]
    after = scrape(linked.url, auth=linked.relay.auth("crm"))
    name, labels = "calrelay_relay_imports_total", {"outcome": "not-applied"}
    assert value(after, name, **labels) - value(before, name, **labels) == 1  # counted once, as noted


def test_housekeeping_is_noted_once(linked):
    created(linked, "appt")
    subprocess.run([sys.executable, "-m", "proxy", "emulator", "faults", "--url", linked.emulator.discovery_url,
                    "--etag-churn"], check=True, capture_output=True, timeout=60)
    entry = noted(linked, "appt", "noted")
    assert "housekeeping" in entry["reason"]
    passes(linked, 3)  # the ETags keep changing: the same state, not noted again
    assert decisions(linked, uid="appt") == [("created", "appt"), ("noted", "appt")]


def test_an_icloud_event_outside_the_sync_window_is_skipped_with_its_reason(linked):
    icloud_put(linked, "home", "old.ics", event("old", datetime(2020, 1, 6, 9, 0, tzinfo=UTC)))
    linked.sync_now()
    entry = noted(linked, "old", "skipped-outside-window")
    assert "90 days back to 730 days ahead" in entry["reason"] and entry["icloud_calendar"] == "home"
    passes(linked)
    assert decisions(linked, uid="old") == [("skipped-outside-window", "old")]
    assert "old" not in mirror(linked, "icloud-home")


def test_a_uid_in_two_booking_calendars_and_a_uid_of_an_icloud_event(linked):
    crm = linked.relay.auth("crm")
    assert mkcalendar(linked.url + "alice/support/", crm, "Support", kind="round-robin").status_code == 201
    created(linked, "twin")
    assert put(linked.url + "alice/support/twin.ics", crm, event("twin", START)).status_code == 201
    entry = noted(linked, "twin", "skipped-duplicate")
    assert entry["calendar"] == "/alice/support/" and "/alice/sales/" in entry["reason"]

    icloud_put(linked, "work", "dentist.ics", event("dentist", START + timedelta(days=1), summary="Dentist"))
    linked.sync_now()
    noted(linked, "dentist", "imported")
    assert put(linked.url + "alice/sales/dentist.ics", crm, event("dentist", START)).status_code == 201
    entry = noted(linked, "dentist", "skipped-icloud-uid")
    assert "never overwrites" in entry["reason"] and entry["calendar"] == "/alice/sales/"
    passes(linked)
    assert decisions(linked, uid="twin") == [("created", "twin"), ("skipped-duplicate", "twin")]
    assert decisions(linked, uid="dentist") == [("imported", "dentist"), ("skipped-icloud-uid", "dentist")]


def test_a_move_between_booking_calendars_is_noted(linked):
    crm = linked.relay.auth("crm")
    assert mkcalendar(linked.url + "alice/support/", crm, "Support", kind="round-robin").status_code == 201
    url = created(linked, "appt")
    moved = requests.request("MOVE", url, auth=crm, timeout=10,
                             headers={"Destination": linked.url + "alice/support/appt.ics"})
    assert moved.status_code in (201, 204), moved.text
    entry = noted(linked, "appt", "noted")
    assert entry["reason"] == "moved in the CRM from /alice/sales/ to /alice/support/; iCloud already has it"
    assert decisions(linked, uid="appt") == [("created", "appt"), ("noted", "appt")]


def test_a_crm_appointment_deleted_in_icloud_is_kept_once_and_comes_back_when_changed(linked):
    url = created(linked, "appt")
    icloud_delete(linked, "work", remote_name("appt"))
    linked.sync_now()
    entry = noted(linked, "appt", "kept-icloud-deletion")
    assert "never deleted by iCloud" in entry["reason"] and "only if the CRM changes it" in entry["reason"]
    passes(linked)  # each push holds it back: the same decision, not noted again
    assert decisions(linked, uid="appt") == [("created", "appt"), ("kept-icloud-deletion", "appt")]
    assert "appt" not in linked.icloud()

    assert put(url, linked.relay.auth("crm"), event("appt", START, summary="Changed")).status_code == 204
    wait_until(lambda: len(decisions(linked, uid="appt")) == 3, message="created again")
    again = activity(linked, uid="appt")[0]
    assert again["decision"] == "created" and again["reason"] == (
        "changed in the CRM after it was deleted in iCloud: created again")
    assert "appt" in linked.icloud()



def test_an_icloud_object_calrelay_cannot_read_is_not_imported_with_the_error(linked, caplog):
    """iCloud's own validation is not calrelay's: an object the emulator stores unchecked stands for it."""
    store = linked.emulator.emulator.store
    (state,) = store.accounts.values()
    broken = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:broken\r\n"
              "DTSTAMP:20260101T000000Z\r\nDTSTART:20261203T090000Z\r\nDTSTART:20261203T100000Z\r\n"
              "END:VEVENT\r\nEND:VCALENDAR\r\n")

    async def put_broken() -> None:
        store.put_object(state, state.collections["home"], "broken.ics", broken, "broken", "VEVENT")

    linked.relay.run(put_broken())
    caplog.set_level(logging.INFO, logger="proxy.relay.worker")
    linked.sync_now()
    entry = noted(linked, "broken.ics", "not-imported")
    # The pass's summary is logged when the pass ends, which may be a moment after the entry is recorded.
    wait_until(lambda: any("could not import 1 iCloud event" in r.getMessage() for r in caplog.records),
               message="the pass summary logged")
    assert "is not a readable event" in entry["reason"] and "more than one DTSTART" in entry["reason"]
    assert entry["icloud_calendar"] == "home"
    passes(linked)
    assert decisions(linked, uid="broken.ics") == [("not-imported", "broken.ics")]


def test_an_icloud_object_too_large_to_read_is_not_imported_and_the_rest_is(calrelay_factory):
    overrides = {"upstream": {**FAST["upstream"], "max_response_bytes": 50_000}}
    linked = make_linked(calrelay_factory(overrides=overrides))
    icloud_put(linked, "work", "huge.ics", event("huge", START, summary="x" * 100_000))
    icloud_put(linked, "work", "small.ics", event("small", START + timedelta(hours=3)))
    linked.sync_now()
    entry = noted(linked, "huge.ics", "not-imported")
    assert "too large to read" in entry["reason"] and "max_response_bytes" in entry["reason"]
    wait_until(lambda: "small" in mirror(linked), message="the small event imported")
    passes(linked)
    assert decisions(linked, uid="huge.ics") == [("not-imported", "huge.ics")]
    assert "huge" not in mirror(linked)
