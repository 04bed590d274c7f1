"""Checklist 30: the invitation log records what iCloud's server-side scheduling would e-mail."""

from __future__ import annotations

from proxy.emulator import EmulatorServer
from tests.emulator.conftest import APPLE_ID, HOME, Dav, event

HOME_CAL = HOME + "home/"
ORGANIZER = f"ORGANIZER:mailto:{APPLE_ID}"


async def test_attendees_without_schedule_agent_client_are_mailed_and_cancelled(
    emulator: EmulatorServer, dav: Dav
) -> None:
    attendees = "\n".join([
        ORGANIZER,
        "ATTENDEE;CN=Alice:mailto:alice@example.com",
        "ATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:bob@example.com",
        f"ATTENDEE:mailto:{APPLE_ID}",
    ])
    assert (await dav.put(HOME_CAL + "meeting.ics", event("meeting", extra=attendees))).status == 201
    mail = await emulator.control("GET", "mail")
    assert [(m["method"], m["recipients"], m["uid"]) for m in mail] == [("REQUEST", ["alice@example.com"], "meeting")]
    assert mail[0]["sender"] == APPLE_ID and mail[0]["href"] == HOME_CAL + "meeting.ics"
    assert (await dav.request("DELETE", HOME_CAL + "meeting.ics")).status == 204
    assert [(m.method, m.recipients) for m in emulator.mail()][-1] == ("CANCEL", ("alice@example.com",))
    assert await emulator.control("DELETE", "mail") == []
    assert emulator.mail() == []


async def test_client_scheduled_events_send_no_mail(emulator: EmulatorServer, dav: Dav) -> None:
    muted = "\n".join([ORGANIZER, "ATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:carol@example.com"])
    assert (await dav.put(HOME_CAL + "muted.ics", event("muted", extra=muted))).status == 201
    assert (await dav.put(HOME_CAL + "plain.ics", event("plain"))).status == 201
    assert (await dav.request("DELETE", HOME_CAL + "muted.ics")).status == 204
    assert emulator.mail() == []
