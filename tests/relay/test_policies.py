"""Per-link policies end to end against the emulator (implicit scheduling on, its default): attendees and
privacy as iCloud sees them."""

from __future__ import annotations

from datetime import UTC, datetime

import requests
from icalendar import Calendar

from tests.helpers import event, put
from tests.relay.conftest import link, make_linked, wait_until
from tests.relay.test_pull import icloud_put

START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
PEOPLE = (
    "ORGANIZER;CN=Sales:mailto:sales@crm.test\r\n"
    "ATTENDEE;CN=Jane Client;PARTSTAT=NEEDS-ACTION:mailto:jane@client.test\r\n"
    "ATTENDEE;CN=Friend:mailto:friend@icloud.com\r\n"
    "DESCRIPTION:Bring the contract\r\nLOCATION:Room 4\r\nURL:https://crm.test/b/1\r\n"
)
OVERRIDES = {"upstream": {"poll_interval": 1.0, "min_backoff": 0.2, "max_backoff": 2.0}}


def _vevent(text: str):
    return Calendar.from_ical(text).walk("VEVENT")[0]


def test_default_attendee_policy_mails_nobody_even_icloud_hosted(linked):
    crm = linked.relay.auth("crm")
    assert put(linked.url + "alice/sales/p1.ics", crm, event("p1", START, extra=PEOPLE)).status_code == 201
    wait_until(lambda: "p1" in linked.icloud_store(), message="appointment in iCloud")
    pushed = _vevent(linked.icloud_store()["p1"])
    assert "ATTENDEE" not in pushed and "ORGANIZER" not in pushed
    assert str(pushed["DESCRIPTION"]) == (
        "Bring the contract\n\nWith: Jane Client <jane@client.test>, Friend <friend@icloud.com>"
    )
    assert linked.emulator.mail() == []
    # An edit in iCloud comes back without the "With:" line in the CRM's description, attendees untouched.
    icloud_put(linked, "work", "p1.ics", linked.icloud_store()["p1"].replace("SUMMARY:Call", "SUMMARY:Moved"))
    url = linked.url + "alice/sales/p1.ics"

    def edited() -> str | None:
        text = requests.get(url, auth=crm, timeout=10).text
        return text if "SUMMARY:Moved" in text else None

    crm_copy = wait_until(edited, message="the iCloud edit in the CRM")
    merged = _vevent(crm_copy)
    assert str(merged["DESCRIPTION"]) == "Bring the contract" and len(merged["ATTENDEE"]) == 2


def test_schedule_agent_client_policy_keeps_attendees_and_icloud_still_invites(calrelay_factory):
    linked = make_linked(calrelay_factory(overrides=OVERRIDES), policies={"attendees": "schedule-agent-client"})
    assert linked.status()["policies"]["attendees"] == "schedule-agent-client"
    crm = linked.relay.auth("crm")
    assert put(linked.url + "alice/sales/p2.ics", crm, event("p2", START, extra=PEOPLE)).status_code == 201
    wait_until(lambda: "p2" in linked.icloud_store(), message="appointment in iCloud")
    pushed = _vevent(linked.icloud_store()["p2"])
    agents = {str(a): a.params.get("SCHEDULE-AGENT") for a in pushed["ATTENDEE"]}
    assert agents == {"mailto:jane@client.test": "CLIENT", "mailto:friend@icloud.com": None}
    # The warning in the docs, made true: iCloud invites the address it hosts, and only that one.
    assert [(m.method, m.recipients) for m in linked.emulator.mail()] == [("REQUEST", ("friend@icloud.com",))]


def test_privacy_templates(calrelay_factory):
    linked = make_linked(calrelay_factory(overrides=OVERRIDES), policies={"privacy_title": "{calendar}: {title}"})
    crm = linked.relay.auth("crm")
    assert put(linked.url + "alice/sales/p3.ics", crm, event("p3", START, summary="Demo", extra=PEOPLE)).status_code \
        == 201
    wait_until(lambda: "p3" in linked.icloud_store(), message="appointment in iCloud")
    pushed = _vevent(linked.icloud_store()["p3"])
    assert str(pushed["SUMMARY"]) == "Sales: Demo"
    assert not {"DESCRIPTION", "LOCATION", "URL", "ATTENDEE", "ORGANIZER"} & set(pushed)
    assert linked.emulator.mail() == []
    # A fixed title, after linking again; the CRM's copy keeps its own title and text.
    link(linked.relay, policies={"privacy_title": "Busy"})
    assert put(linked.url + "alice/sales/p3.ics", crm, event("p3", START, summary="Demo 2", extra=PEOPLE)).status_code \
        == 204
    wait_until(lambda: "SUMMARY:Busy" in linked.icloud_store().get("p3", ""), message="fixed title in iCloud")
    crm_copy = requests.get(linked.url + "alice/sales/p3.ics", auth=crm, timeout=10).text
    assert "SUMMARY:Demo 2" in crm_copy and "Room 4" in crm_copy


def test_bad_policies_are_refused_with_the_fix(linked):
    for policies, words in (
        ({"attendees": "nobody"}, "attendees must be one of description, schedule-agent-client"),
        ({"privacy_title": "{owner}"}, "only {title} and {calendar}"),
        ({"colour": "red"}, "unknown policy 'colour'"),
    ):
        response = requests.put(
            linked.url + "api/v1/users/alice/link", auth=linked.relay.auth("crm"), timeout=30,
            json={"apple_id": "demo@icloud.test", "app_password": "abcd-efgh-ijkl-mnop", "primary": "work",
                  "policies": policies},
        )
        assert response.status_code == 400 and words in response.json()["error"]["message"], response.text
