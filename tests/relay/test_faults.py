"""Nothing lost, nothing duplicated: the relay under upstream faults, ETag churn and concurrent edits (issue 5)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import requests

from proxy.relay import transforms
from tests.helpers import event, put
from tests.relay.conftest import make_linked, wait_until
from tests.relay.test_pull import icloud_put

START = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)


def test_500_appointments_through_random_5xx_and_a_throttling_storm(calrelay_factory):
    linked = make_linked(calrelay_factory(overrides={"upstream": {"min_backoff": 0.1, "max_backoff": 1.0,
                                                                  "poll_interval": 3600}}))
    linked.emulator.set_faults(error_rate=0.3, throttle_seconds=2.0, retry_after=1, throttle_status=503)
    crm = linked.relay.auth("crm")
    session = requests.Session()

    def write(number: int) -> int:
        body = event(f"storm-{number}", START + timedelta(minutes=30 * number))
        return put(linked.url + f"alice/sales/storm-{number}.ics", crm, body).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(write, range(500))) == {201}
    session.close()
    # The storm is over after two seconds; the 30 % errors go on until everything is there.
    wait_until(lambda: len(linked.icloud_store()) >= 500, timeout=240, message="all 500 appointments in iCloud")
    linked.emulator.clear_faults()
    wait_until(lambda: not linked.status()["pending"], timeout=60, message="nothing pending")
    events = linked.icloud()
    assert sorted(events) == sorted(f"storm-{n}" for n in range(500))
    assert linked.emulator.mail() == []


def test_etag_churn_is_not_a_conflict(linked):
    crm = linked.relay.auth("crm")
    url = linked.url + "alice/sales/churn.ics"
    assert put(url, crm, event("churn", START, summary="First")).status_code == 201
    wait_until(lambda: "churn" in linked.icloud())
    linked.relay.run(linked.emulator.control("POST", "/churn", {"apple_id": "demo@icloud.test"}))
    assert put(url, crm, event("churn", START, summary="Second")).status_code == 204
    wait_until(lambda: "SUMMARY:Second" in linked.icloud()["churn"], message="update despite the churned ETag")
    assert not linked.status()["pending"]


def edit_on_both_sides(calrelay_factory, icloud_edited: str, crm_edited: str):
    """An appointment pushed to iCloud, then edited in iCloud and in the CRM (LAST-MODIFIED as given) before
    the relay has pulled: it learns of the iCloud edit only through the 412 of its own update."""
    linked = make_linked(calrelay_factory(overrides={"upstream": {"poll_interval": 3600}}))
    crm = linked.relay.auth("crm")
    url = linked.url + "alice/sales/both.ics"
    assert put(url, crm, event("both", START, summary="Original",
                               extra="LAST-MODIFIED:20270101T100000Z\r\n")).status_code == 201
    wait_until(lambda: "both" in linked.icloud())
    icloud_text = linked.icloud()["both"].replace("SUMMARY:Original", "SUMMARY:iCloud edit")
    icloud_text = icloud_text.replace("LAST-MODIFIED:20270101T100000Z", f"LAST-MODIFIED:{icloud_edited}")
    icloud_put(linked, "work", transforms.remote_name("both"), icloud_text)
    assert put(url, crm, event("both", START, summary="CRM edit",
                               extra=f"LAST-MODIFIED:{crm_edited}\r\n")).status_code == 204
    return linked, lambda: requests.get(url, auth=crm, timeout=10).text


def test_concurrent_edits_later_icloud_edit_wins_in_two_way(calrelay_factory):
    linked, crm_version = edit_on_both_sides(calrelay_factory, icloud_edited="20270101T120000Z",
                                             crm_edited="20270101T110000Z")
    wait_until(lambda: "iCloud edit" in crm_version(), message="the later iCloud edit reaches the CRM")
    assert "SUMMARY:iCloud edit" in linked.icloud()["both"]  # not blindly overwritten by the older CRM edit
    assert not linked.status()["pending"]


def test_concurrent_edits_later_crm_edit_wins(calrelay_factory):
    linked, crm_version = edit_on_both_sides(calrelay_factory, icloud_edited="20270101T110000Z",
                                             crm_edited="20270101T120000Z")
    wait_until(lambda: "SUMMARY:CRM edit" in linked.icloud()["both"], message="the later CRM edit reaches iCloud")
    passes = linked.worker().passes
    linked.sync_now()
    wait_until(lambda: linked.worker().passes > passes, message="a pull after the CRM edit won")
    assert "SUMMARY:CRM edit" in crm_version()
