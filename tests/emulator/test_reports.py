"""Checklist 23–28: calendar-query, CDATA and expand, multiget, sync-collection, free-busy and VJOURNAL."""

from __future__ import annotations

from defusedxml import ElementTree

from proxy.emulator import EmulatorServer
from tests.emulator.conftest import HOME, Dav, event

HOME_CAL = HOME + "home/"
C_NS = 'xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"'
PROLOG = '<?xml version="1.0" encoding="UTF-8"?>'


def query(inner_filter: str, data: str = "<C:calendar-data/>") -> str:
    return (
        f"{PROLOG}<C:calendar-query {C_NS}><prop><getetag/>{data}</prop>"
        f"<C:filter>{inner_filter}</C:filter></C:calendar-query>"
    )


def event_range(start: str, end: str) -> str:
    return (
        f'<C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range start="{start}" end="{end}"/>'
        "</C:comp-filter></C:comp-filter>"
    )


def hrefs(text: str) -> list[str]:
    root = ElementTree.fromstring(text.encode())
    return [r.findtext("{DAV:}href") for r in root.findall("{DAV:}response")]


async def seed(dav: Dav) -> None:
    assert (await dav.put(HOME_CAL + "may.ics", event("may", "20260501T100000Z", "20260501T110000Z"))).status == 201
    assert (await dav.put(HOME_CAL + "july.ics", event("july", "20260701T100000Z", "20260701T110000Z"))).status == 201
    weekly = event("weekly", "20260101T090000Z", "20260101T093000Z", extra="RRULE:FREQ=WEEKLY;COUNT=30")
    assert (await dav.put(HOME_CAL + "weekly.ics", weekly)).status == 201


async def test_time_range_query_returns_overlapping_objects_and_the_collection(dav: Dav) -> None:  # 23
    await seed(dav)
    reply = await dav.report(HOME_CAL, query(event_range("20260430T000000Z", "20260502T000000Z")))
    assert reply.status == 207
    found = hrefs(reply.text)
    # The collection itself comes first (iCloud's quirk), then the matches; the weekly series has an
    # occurrence on 2026-04-30 and so overlaps too, while July does not.
    assert found[0] == HOME_CAL
    assert sorted(found[1:]) == [HOME_CAL + "may.ics", HOME_CAL + "weekly.ics"]
    root = ElementTree.fromstring(reply.text.encode())
    collection = root.findall("{DAV:}response")[0]
    statuses = [p.findtext("{DAV:}status") for p in collection.findall("{DAV:}propstat")]
    assert statuses == ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"]
    assert len(collection.find("{DAV:}propstat/{DAV:}prop")) == 0
    assert collection.find(".//{urn:ietf:params:xml:ns:caldav}calendar-data") is not None


async def test_vcalendar_only_filter_is_refused_configurably(emulator: EmulatorServer, dav: Dav) -> None:  # 24
    only_calendar = query('<C:comp-filter name="VCALENDAR"/>')
    assert (await dav.report(HOME_CAL, only_calendar)).status == 400
    emulator.options.update({"vcalendar_filter_status": 403})
    refused = await dav.report(HOME_CAL, only_calendar)
    assert refused.status == 403 and "valid-filter" in refused.text


async def test_calendar_data_is_cdata_and_expand_duplicates_dtstamp(dav: Dav) -> None:  # 25
    await seed(dav)
    plain = await dav.report(HOME_CAL, query(event_range("20260430T000000Z", "20260502T000000Z")))
    assert '<calendar-data xmlns="urn:ietf:params:xml:ns:caldav"><![CDATA[BEGIN:VCALENDAR' in plain.text
    expand = '<C:calendar-data><C:expand start="20260101T000000Z" end="20260122T000000Z"/></C:calendar-data>'
    reply = await dav.report(HOME_CAL, query(event_range("20260101T000000Z", "20260122T000000Z"), expand))
    root = ElementTree.fromstring(reply.text.encode())
    data = [r.findtext(".//{urn:ietf:params:xml:ns:caldav}calendar-data") for r in root.findall("{DAV:}response")]
    weekly = next(d for d in data if d and "UID:weekly" in d)
    instances = weekly.split("BEGIN:VEVENT")[1:]
    assert len(instances) == 3
    for instance in instances:
        stamps = [line for line in instance.splitlines() if line.startswith("DTSTAMP")]
        assert len(stamps) == 2 and stamps[1] == "DTSTAMP:20260101T000000Z"
        assert "RECURRENCE-ID" in instance and "RRULE" not in instance


async def test_multiget_answers_unknown_hrefs_with_a_per_item_404(dav: Dav) -> None:  # 26
    await seed(dav)
    body = (
        f"{PROLOG}<C:calendar-multiget {C_NS}><prop><getetag/><C:calendar-data/></prop>"
        f"<href>{HOME_CAL}may.ics</href><href>{HOME_CAL}gone.ics</href><href>{HOME_CAL}july.ics</href>"
        "</C:calendar-multiget>"
    )
    reply = await dav.report(HOME_CAL, body)
    assert reply.status == 207
    root = ElementTree.fromstring(reply.text.encode())
    by_href = {r.findtext("{DAV:}href"): r for r in root.findall("{DAV:}response")}
    assert set(by_href) == {HOME_CAL, HOME_CAL + "may.ics", HOME_CAL + "gone.ics", HOME_CAL + "july.ics"}
    assert by_href[HOME_CAL + "gone.ics"].findtext("{DAV:}status") == "HTTP/1.1 404 Not Found"
    assert "UID:july" in by_href[HOME_CAL + "july.ics"].findtext(".//{urn:ietf:params:xml:ns:caldav}calendar-data")


def sync_body(token: str) -> str:
    return f"{PROLOG}<sync-collection xmlns=\"DAV:\"><sync-token>{token}</sync-token><sync-level>1</sync-level>" \
        "<prop><getetag/></prop></sync-collection>"


async def test_sync_collection_changes_deletions_and_bad_tokens(emulator: EmulatorServer, dav: Dav) -> None:  # 27
    await seed(dav)
    initial = await dav.report(HOME_CAL, sync_body(""))
    assert initial.status == 207
    assert sorted(hrefs(initial.text)[1:]) == [HOME_CAL + n for n in ("july.ics", "may.ics", "weekly.ics")]
    token = ElementTree.fromstring(initial.text.encode()).findtext("{DAV:}sync-token")
    assert token
    assert (await dav.request("DELETE", HOME_CAL + "may.ics")).status == 204
    assert (await dav.put(HOME_CAL + "new.ics", event("new"))).status == 201
    changes = await dav.report(HOME_CAL, sync_body(token))
    root = ElementTree.fromstring(changes.text.encode())
    by_href = {r.findtext("{DAV:}href"): r for r in root.findall("{DAV:}response")}
    assert set(by_href) == {HOME_CAL, HOME_CAL + "may.ics", HOME_CAL + "new.ics"}
    assert by_href[HOME_CAL + "may.ics"].findtext("{DAV:}status") == "HTTP/1.1 404 Not Found"
    assert root.findtext("{DAV:}sync-token") != token
    bad = await dav.report(HOME_CAL, sync_body("HwoQEgwAAnot-a-token"))
    assert bad.status == 403 and bad.text == ""
    emulator.options.update({"sync_token_error_element": True})
    detailed = await dav.report(HOME_CAL, sync_body("bogus"))
    assert detailed.status == 403 and "<valid-sync-token" in detailed.text


async def test_free_busy_query_is_unsupported_and_vjournal_is_a_500(dav: Dav) -> None:  # 28
    free_busy = (
        f'{PROLOG}<C:free-busy-query {C_NS}><C:time-range start="20260101T000000Z" end="20260201T000000Z"/>'
        "</C:free-busy-query>"
    )
    assert (await dav.report(HOME_CAL, free_busy)).status in (403, 501)
    journal = event("journal").replace("VEVENT", "VJOURNAL")
    assert (await dav.put(HOME_CAL + "journal.ics", journal)).status == 500


async def test_whitespace_before_the_xml_declaration_is_a_400(dav: Dav) -> None:
    reply = await dav.report(HOME_CAL, "\n  " + query(event_range("20260101T000000Z", "20260201T000000Z")))
    assert reply.status == 400
