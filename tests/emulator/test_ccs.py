"""The behaviours iCloud inherits from Apple's CalendarServer (docs/emulator.md, "CalendarServer heritage")."""

from __future__ import annotations

import time

from icalendar import Calendar

from proxy.emulator import EmulatorServer
from tests.emulator.conftest import APPLE_ID, HOME, Dav, event

HOME_CAL = HOME + "home/"
TIMEZONE = "\r\n".join(
    [
        "BEGIN:VTIMEZONE",
        "TZID:Europe/Berlin",
        "BEGIN:STANDARD",
        "DTSTART:19701025T030000",
        "TZOFFSETFROM:+0200",
        "TZOFFSETTO:+0100",
        "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
        "END:STANDARD",
        "END:VTIMEZONE",
    ]
)
CUSTOM_ZONE = TIMEZONE.replace("Europe/Berlin", "Office Time")
ALARM = "BEGIN:VALARM\nACTION:DISPLAY\nDESCRIPTION:mine\nTRIGGER:-PT5M\nEND:VALARM"


def _report(start: str, end: str, with_data: bool = True) -> str:
    data = "<C:calendar-data/>" if with_data else ""
    return (
        '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/>'
        f'{data}</D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        f'<C:time-range start="{start}" end="{end}"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>'
    )


def _utc(offset_days: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + offset_days * 86400))


async def _stored(dav: Dav, path: str) -> Calendar:
    got = await dav.request("GET", path)
    assert got.status == 200
    return Calendar.from_ical(got.text)


async def test_new_event_without_alarm_gets_the_default_alarm(dav: Dav) -> None:
    assert (await dav.put(HOME_CAL + "a.ics", event("alarm-1"))).status == 201
    alarms = [c for c in (await _stored(dav, HOME_CAL + "a.ics")).walk("VALARM")]
    assert len(alarms) == 1 and str(alarms[0]["X-APPLE-DEFAULT-ALARM"]) == "TRUE"
    # An event with its own alarm keeps just that one; an update is never given one.
    assert (await dav.put(HOME_CAL + "b.ics", event("alarm-2", extra=ALARM))).status == 201
    assert [str(a["DESCRIPTION"]) for a in (await _stored(dav, HOME_CAL + "b.ics")).walk("VALARM")] == ["mine"]
    assert (await dav.put(HOME_CAL + "a.ics", event("alarm-1"))).status == 204
    assert not (await _stored(dav, HOME_CAL + "a.ics")).walk("VALARM")


async def test_default_alarms_switch_off(emulator: EmulatorServer, dav: Dav) -> None:
    emulator.options.update({"default_alarms": False})
    body = event("alarm-off")
    assert (await dav.put(HOME_CAL + "c.ics", body)).status == 201
    assert (await dav.request("GET", HOME_CAL + "c.ics")).text == body


async def test_standard_timezones_are_stripped_custom_ones_kept(emulator: EmulatorServer, dav: Dav) -> None:
    emulator.options.update({"default_alarms": False})
    extra = "DTSTART;TZID=Europe/Berlin:20260501T100000\nDTEND;TZID=Europe/Berlin:20260501T110000"
    body = event("tz-1", start="", end=None, extra=extra).replace("DTSTART:\r\n", "")
    body = body.replace("BEGIN:VEVENT", TIMEZONE + "\r\n" + CUSTOM_ZONE + "\r\nBEGIN:VEVENT")
    assert (await dav.put(HOME_CAL + "tz.ics", body)).status == 201
    stored = await _stored(dav, HOME_CAL + "tz.ics")
    assert [str(z["TZID"]) for z in stored.walk("VTIMEZONE")] == ["Office Time"]
    assert str(stored.walk("VEVENT")[0]["DTSTART"].params["TZID"]) == "Europe/Berlin"
    emulator.options.update({"timezones_by_reference": False})
    assert (await dav.put(HOME_CAL + "tz.ics", body)).status == 204
    assert len((await _stored(dav, HOME_CAL + "tz.ics")).walk("VTIMEZONE")) == 2


async def test_time_range_limits(emulator: EmulatorServer, dav: Dav) -> None:
    too_old = await dav.report(HOME_CAL, _report(_utc(-366), _utc(0)))
    assert too_old.status == 403 and "min-date-time" in too_old.text
    too_far = await dav.report(HOME_CAL, _report(_utc(0), _utc(5 * 366 + 2)))
    assert too_far.status == 403 and "max-date-time" in too_far.text
    assert (await dav.report(HOME_CAL, _report(_utc(-364), _utc(5 * 365)))).status == 207
    emulator.options.update({"query_limits": False})
    assert (await dav.report(HOME_CAL, _report(_utc(-4000), _utc(4000)))).status == 207


async def test_result_limit_with_data_and_multiget_limit(emulator: EmulatorServer, dav: Dav) -> None:
    emulator.options.update({"max_query_results": 3, "max_multiget_hrefs": 2})
    for number in range(4):
        assert (
            await dav.put(
                HOME_CAL + f"n{number}.ics",
                event(f"n{number}", f"2026050{number + 1}T100000Z", f"2026050{number + 1}T110000Z"),
            )
        ).status == 201
    refused = await dav.report(HOME_CAL, _report("20260101T000000Z", "20270101T000000Z"))
    assert refused.status == 403 and "number-of-matches-within-limits" in refused.text
    # Without calendar-data the same query is answered (the limit is on results with data).
    listing = await dav.report(HOME_CAL, _report("20260101T000000Z", "20270101T000000Z", with_data=False))
    assert listing.status == 207 and listing.text.count("n3.ics") == 1
    within = await dav.report(HOME_CAL, _report("20260501T000000Z", "20260503T000000Z"))
    assert within.status == 207 and within.text.count(".ics") == 2
    multiget = (
        '<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/>'
        "</D:prop>{}</C:calendar-multiget>"
    )
    hrefs = "".join(f"<D:href>{HOME_CAL}n{n}.ics</D:href>" for n in range(3))
    assert (await dav.report(HOME_CAL, multiget.format(hrefs))).status == 403
    assert (await dav.report(HOME_CAL, multiget.format(hrefs.rsplit("<D:href>", 1)[0]))).status == 207


async def test_sync_tokens_expire_after_fourteen_days(emulator: EmulatorServer, dav: Dav) -> None:
    store = emulator.emulator.store
    now = [time.time()]
    store.clock = lambda: now[0]
    sync = (
        '<D:sync-collection xmlns:D="DAV:"><D:sync-token>{}</D:sync-token><D:sync-level>1</D:sync-level>'
        "<D:prop><D:getetag/></D:prop></D:sync-collection>"
    )
    first = await dav.report(HOME_CAL, sync.format(""))
    token = first.text.split("<sync-token>")[1].split("<")[0]
    assert (await dav.put(HOME_CAL + "s1.ics", event("s1"))).status == 201
    now[0] += 13 * 86400
    assert (await dav.report(HOME_CAL, sync.format(token))).status == 207
    now[0] += 2 * 86400
    expired = await dav.report(HOME_CAL, sync.format(token))
    assert expired.status == 403 and expired.text == ""
    # A token taken after the last change stays good however old: nothing newer was cleaned up.
    fresh = (await dav.report(HOME_CAL, sync.format(""))).text.split("<sync-token>")[1].split("<")[0]
    now[0] += 30 * 86400
    assert (await dav.report(HOME_CAL, sync.format(fresh))).status == 207


async def test_implicit_scheduling_invites_icloud_hosted_attendees(emulator: EmulatorServer, dav: Dav) -> None:
    people = "\n".join(
        [
            f"ORGANIZER;SCHEDULE-AGENT=CLIENT:mailto:{APPLE_ID}",
            "ATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:friend@icloud.com",
            "ATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:boss@me.com",
            "ATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:client@example.com",
        ]
    )
    assert (await dav.put(HOME_CAL + "m.ics", event("sched-1", extra=people))).status == 201
    assert [(m.method, m.recipients) for m in emulator.mail()] == [("REQUEST", ("friend@icloud.com", "boss@me.com"))]
    stored = (await _stored(dav, HOME_CAL + "m.ics")).walk("VEVENT")[0]
    assert "SCHEDULE-AGENT" not in stored["ORGANIZER"].params
    agents = {str(a): a.params.get("SCHEDULE-AGENT") for a in stored["ATTENDEE"]}
    assert agents["mailto:client@example.com"] == "CLIENT" and agents["mailto:friend@icloud.com"] is None
    emulator.emulator.mail.clear()
    emulator.options.update({"implicit_scheduling": False})
    assert (await dav.put(HOME_CAL + "m2.ics", event("sched-2", extra=people))).status == 201
    assert emulator.mail() == []


async def test_attendee_deleting_sends_a_decline_to_the_organizer(emulator: EmulatorServer, dav: Dav) -> None:
    invited = "\n".join(
        [
            "ORGANIZER:mailto:host@example.com",
            f"ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:{APPLE_ID}",
        ]
    )
    assert (await dav.put(HOME_CAL + "inv.ics", event("inv-1", extra=invited))).status == 201
    assert emulator.mail() == []
    assert (await dav.request("DELETE", HOME_CAL + "inv.ics")).status == 204
    assert [(m.method, m.recipients, m.uid) for m in emulator.mail()] == [("REPLY", ("host@example.com",), "inv-1")]


async def test_budget_backoff_outlasts_retry_after(emulator: EmulatorServer, dav: Dav) -> None:
    emulator.set_faults(budget_per_minute=2, retry_after=1, budget_backoff_seconds=3)
    assert (await dav.request("GET", HOME_CAL + "x.ics")).status == 404
    assert (await dav.request("GET", HOME_CAL + "x.ics")).status == 404
    refused = await dav.request("GET", HOME_CAL + "x.ics")
    assert refused.status == 503 and refused.headers["Retry-After"] == "1"
    # Waiting exactly the announced second is not enough: the account is still refused.
    faults = emulator.emulator.faults
    penalty = faults._penalty[APPLE_ID]
    assert penalty - time.monotonic() > 1.5
    assert (await dav.request("GET", HOME_CAL + "x.ics")).status == 503


async def test_hrefs_spell_the_at_sign_percent_encoded(emulator: EmulatorServer, dav: Dav) -> None:
    emulator.options.update({"default_alarms": False})
    assert (await dav.put(HOME_CAL + "abc@example.com.ics", event("abc@example.com"))).status == 201
    listing = await dav.request("PROPFIND", HOME_CAL, headers={"Depth": "1"})
    assert HOME_CAL + "abc%40example.com.ics" in listing.text and "abc@example.com.ics" not in listing.text
    # Either spelling reaches the object.
    assert (await dav.request("GET", HOME_CAL + "abc%40example.com.ics")).status == 200
    assert (await dav.request("GET", HOME_CAL + "abc@example.com.ics")).status == 200
    emulator.options.update({"encode_at_in_hrefs": False})
    listing = await dav.request("PROPFIND", HOME_CAL, headers={"Depth": "1"})
    assert HOME_CAL + "abc@example.com.ics" in listing.text
