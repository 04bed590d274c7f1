"""iCloud -> CRM, end to end against the emulator (issue 6): iCloud events become blocked slots."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import caldav
import pytest
import requests

from proxy.keys import STATE
from proxy.relay import transforms
from tests.helpers import event, put
from tests.relay.conftest import make_linked, wait_until

START = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
INVITE = (
    "ORGANIZER;CN=Boss:mailto:boss@work.test\r\n"
    "ATTENDEE;CN=Demo;PARTSTAT=ACCEPTED:mailto:demo@icloud.test\r\n"
    "ATTENDEE;CN=Other;PARTSTAT=ACCEPTED:mailto:other@work.test\r\n"
)


def icloud_put(linked, calendar: str, name: str, text: str) -> None:
    async def write() -> None:
        async with linked.icloud_client() as client:
            account = await client.discover()
            url = next(c.url for c in account.calendars if c.name == calendar)
            try:
                current = await client.get(url + name)
            except Exception:
                await client.create(url + name, text)
            else:
                await client.update(url + name, text, current.etag)

    linked.relay.run(write())


def icloud_delete(linked, calendar: str, name: str) -> None:
    async def remove() -> None:
        async with linked.icloud_client() as client:
            account = await client.discover()
            url = next(c.url for c in account.calendars if c.name == calendar)
            await client.delete(url + name, None)

    linked.relay.run(remove())


def mirror(linked, name: str = "icloud-work", user: str = "alice") -> dict[str, str]:
    """UID -> text of the events in a mirror collection, read as the CRM reads them."""
    client = caldav.DAVClient(url=linked.url, username="crm", password=linked.relay.password("crm"))
    calendar = client.calendar(url=linked.url + f"{user}/{name}/")
    return {e.icalendar_component["UID"]: e.data for e in calendar.events()}


def pulled(linked, condition, message: str):
    def check():
        linked.sync_now()
        return condition()

    return wait_until(check, message=message)


def test_icloud_event_appears_as_blocked_slot_without_people(linked):
    icloud_put(linked, "work", "lunch.ics", event("lunch", START, summary="Lunch with boss", extra=INVITE))
    text = pulled(linked, lambda: mirror(linked).get("lunch"), "import into the mirror")
    assert "X-CALRELAY-KIND:BLOCKED" in text and "X-CALRELAY-ORIGIN:ICLOUD" in text
    assert "ATTENDEE" not in text and "ORGANIZER" not in text and "mailto:" not in text
    assert "SUMMARY:Lunch with boss" in text

    icloud_put(linked, "work", "lunch.ics", event("lunch", START + timedelta(hours=1), summary="Late lunch"))
    pulled(linked, lambda: "Late lunch" in mirror(linked).get("lunch", ""), "update reflected")


def test_conflict_calendar_events_are_imported(linked):
    icloud_put(linked, "home", "gym.ics", event("gym", START))
    pulled(linked, lambda: "gym" in mirror(linked, "icloud-home"), "conflict calendar import")
    assert "gym" not in mirror(linked)


def test_icloud_deletion_is_not_propagated_by_default(linked):
    icloud_put(linked, "work", "gone.ics", event("gone", START))
    pulled(linked, lambda: "gone" in mirror(linked), "import")
    icloud_delete(linked, "work", "gone.ics")
    passes = linked.worker().passes
    pulled(linked, lambda: linked.worker().passes > passes + 1, "a pull after the deletion")
    assert "gone" in mirror(linked)


def test_icloud_deletion_propagates_when_asked(calrelay_factory):
    linked = make_linked(calrelay_factory(overrides={"upstream": {"poll_interval": 1.0}}), icloud_deletions="propagate")
    icloud_put(linked, "work", "gone.ics", event("gone", START))
    pulled(linked, lambda: "gone" in mirror(linked), "import")
    icloud_delete(linked, "work", "gone.ics")
    pulled(linked, lambda: "gone" not in mirror(linked), "deletion propagated")


def test_pushed_appointment_is_not_reimported_and_icloud_edits_flow_back(linked):
    crm = linked.relay.auth("crm")
    assert put(linked.url + "alice/sales/a.ics", crm, event("a", START, summary="Consultation")).status_code == 201
    wait_until(lambda: "a" in linked.icloud())
    appointment_url = linked.url + "alice/sales/a.ics"
    edited = linked.icloud()["a"].replace("SUMMARY:Consultation", "SUMMARY:Consultation (moved by phone)")
    icloud_put(linked, "work", transforms.remote_name("a"), edited)
    pulled(linked, lambda: "moved by phone" in requests.get(appointment_url, auth=crm, timeout=10).text,
           "iCloud edit applied to the CRM appointment")
    crm_text = requests.get(appointment_url, auth=crm, timeout=10).text
    assert "X-CALRELAY" not in crm_text or "BLOCKED" not in crm_text  # still an appointment
    assert "a" not in mirror(linked)  # never imported as a blocked slot
    assert linked.icloud()["a"].count("moved by phone") == 1


def test_one_way_keeps_the_crm_version(calrelay_factory):
    linked = make_linked(calrelay_factory(overrides={"upstream": {"poll_interval": 1.0}}), mode="one-way")
    crm = linked.relay.auth("crm")
    assert put(linked.url + "alice/sales/a.ics", crm, event("a", START, summary="Consultation")).status_code == 201
    wait_until(lambda: "a" in linked.icloud())
    edited = linked.icloud()["a"].replace("SUMMARY:Consultation", "SUMMARY:Edited in iCloud")
    icloud_put(linked, "work", transforms.remote_name("a"), edited)
    icloud_put(linked, "work", "other.ics", event("other", START))  # iCloud-born: still imported in one-way
    pulled(linked, lambda: "other" in mirror(linked), "one-way still imports iCloud-born events")
    assert "Edited in iCloud" not in requests.get(linked.url + "alice/sales/a.ics", auth=crm, timeout=10).text
    assert "a" not in mirror(linked)
    # the next CRM change is pushed over iCloud's edit (one-way: the CRM is authoritative)
    assert put(linked.url + "alice/sales/a.ics", crm, event("a", START, summary="Final")).status_code == 204
    wait_until(lambda: "SUMMARY:Final" in linked.icloud()["a"], message="CRM change pushed")


def test_refused_sync_token_falls_back_without_duplicates(linked):
    for number in range(5):
        icloud_put(linked, "work", f"e{number}.ics", event(f"e{number}", START + timedelta(days=number)))
    pulled(linked, lambda: len(mirror(linked)) == 5, "import")
    before = {uid: text for uid, text in mirror(linked).items()}
    etags_before = _mirror_etags(linked)
    db = linked.relay.app[STATE].db
    work = next(c for c in linked.relay.run(_call(linked, db.link_calendars, "alice")) if c.remote_name == "work")
    linked.relay.run(_call(linked, db.update_pull_state, "alice", work.remote_url, sync_token="bogus-token",
                           token_state="valid", ctag=None))
    stats = dict(linked.worker().stats)
    icloud_put(linked, "work", "e5.ics", event("e5", START + timedelta(days=9)))
    pulled(linked, lambda: "e5" in mirror(linked), "new event after the fallback")
    status = next(c for c in linked.status()["calendars"] if c["name"] == "work")
    assert status["token_state"] in ("refused", "valid")
    after = mirror(linked)
    assert {uid: after[uid] for uid in before} == before
    assert {k: v for k, v in _mirror_etags(linked).items() if k in etags_before} == etags_before
    assert linked.worker().stats["imported"] - stats["imported"] == 1
    assert linked.worker().stats["refreshed"] == stats["refreshed"]


def test_apple_housekeeping_is_not_a_change(linked):
    icloud_put(linked, "work", "h.ics", event("h", START))
    pulled(linked, lambda: "h" in mirror(linked), "import")
    etags = _mirror_etags(linked)
    stats = dict(linked.worker().stats)
    linked.relay.run(linked.emulator.control("POST", "/churn", {"apple_id": "demo@icloud.test"}))
    passes = linked.worker().passes
    pulled(linked, lambda: linked.worker().passes > passes + 1, "pulls after the churn")
    assert _mirror_etags(linked) == etags
    assert linked.worker().stats["refreshed"] == stats["refreshed"]


@pytest.mark.slow
def test_large_import_then_only_changes_are_transferred(calrelay_factory):
    linked = make_linked(calrelay_factory(overrides={"upstream": {"poll_interval": 3600, "max_concurrency": 16}}))

    async def seed() -> None:
        async with linked.icloud_client() as client:
            account = await client.discover()
            url = next(c.url for c in account.calendars if c.name == "work")
            limit = asyncio.Semaphore(16)

            async def one(number: int) -> None:
                async with limit:
                    await client.create(f"{url}bulk-{number}.ics",
                                        event(f"bulk-{number}", START + timedelta(hours=number)))

            await asyncio.gather(*(one(n) for n in range(2000)))

    linked.relay.run(seed(), timeout=300)
    first = dict(linked.worker().stats)
    linked.sync_now()
    wait_until(lambda: linked.worker().stats["imported"] - first["imported"] >= 2000, timeout=240, message="import")
    assert len(mirror(linked)) == 2000
    fetched = linked.worker().stats["fetched"]

    async def change() -> None:
        async with linked.icloud_client() as client:
            account = await client.discover()
            url = next(c.url for c in account.calendars if c.name == "work")
            for number in range(10):
                current = await client.get(f"{url}bulk-{number}.ics")
                await client.update(current.href, current.text.replace("SUMMARY:Call", "SUMMARY:Changed"),
                                    current.etag)

    linked.relay.run(change())
    refreshed = linked.worker().stats["refreshed"]
    linked.sync_now()
    wait_until(lambda: linked.worker().stats["refreshed"] - refreshed == 10, timeout=60, message="10 refreshed")
    assert linked.worker().stats["fetched"] - fetched == 10


async def _call(linked, fn, *args, **kwargs):
    state = linked.relay.app[STATE]
    return await state.call(fn, *args, **kwargs)


def _mirror_etags(linked) -> dict[str, str]:
    response = requests.request(
        "PROPFIND", linked.url + "alice/icloud-work/", auth=linked.relay.auth("crm"), timeout=30,
        headers={"Depth": "1"}, data=b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>',
    )
    import re

    return dict(re.findall(r"<href>([^<]+\.ics)</href>.*?<getetag>([^<]+)</getetag>", response.text, re.S))


def test_an_invitation_the_owner_declined_is_shown_but_does_not_block(linked):
    declined = INVITE.replace("CN=Demo;PARTSTAT=ACCEPTED", "CN=Demo;PARTSTAT=DECLINED")
    icloud_put(linked, "work", "nope.ics", event("nope", START, summary="Declined meeting", extra=declined))
    text = pulled(linked, lambda: mirror(linked).get("nope"), "imported")
    assert "TRANSP:TRANSPARENT" in text and "ATTENDEE" not in text
    answer = requests.get(linked.url + "api/v1/users/alice/availability", auth=linked.relay.auth("crm"), timeout=10,
                          params={"start": "2026-12-02T00:00:00Z", "end": "2026-12-03T00:00:00Z"}).json()
    assert answer["busy"] == []
