"""Checklist 9–14: the calendar home, properties, ctag/sync-token, shared and subscribed calendars, MKCALENDAR."""

from __future__ import annotations

import re

import aiohttp
from defusedxml import ElementTree

from proxy.emulator import EmulatorServer, load_accounts
from proxy.emulator.accounts import shared_calendar_id
from tests.emulator.conftest import APPLE_ID, CS, HOME, Dav, basic, event

C = "urn:ietf:params:xml:ns:caldav"
LISTING = ("<displayname/>", "<resourcetype/>", "<C:supported-calendar-component-set/>", "<CS:getctag/>",
           "<A:calendar-color/>", "<current-user-privilege-set/>")


def responses_by_href(text: str) -> dict[str, ElementTree.Element]:
    root = ElementTree.fromstring(text.encode())
    return {r.findtext("{DAV:}href"): r for r in root.findall("{DAV:}response")}


def found(response: ElementTree.Element, status: str = "200") -> ElementTree.Element:
    for propstat in response.findall("{DAV:}propstat"):
        if status in (propstat.findtext("{DAV:}status") or ""):
            return propstat.find("{DAV:}prop")
    raise AssertionError(f"no {status} propstat")


def privileges(response: ElementTree.Element) -> set[str]:
    privilege_set = found(response).find("{DAV:}current-user-privilege-set")
    return {child.tag.split("}")[1] for privilege in privilege_set for child in privilege}


async def test_home_depth_1_lists_icloud_collections(dav: Dav) -> None:  # 9
    reply = await dav.propfind(HOME, *LISTING, depth="1")
    listing = responses_by_href(reply.text)
    shared = shared_calendar_id(APPLE_ID, "team")
    for member in ("", "home/", "work/", f"{shared}/", "tasks/", "inbox/", "outbox/", "notification/"):
        assert HOME + member in listing, member
    tasks = found(listing[HOME + "tasks/"])
    assert tasks.findtext("{DAV:}displayname") == "Reminders"
    assert [c.get("name") for c in tasks.find(f"{{{C}}}supported-calendar-component-set")] == ["VTODO"]
    home_components = found(listing[HOME]).find(f"{{{C}}}supported-calendar-component-set")
    assert [c.get("name") for c in home_components] == ["VEVENT", "VTODO", "VFREEBUSY"]
    inbox = listing[HOME + "inbox/"]
    assert found(inbox).find("{DAV:}resourcetype").find(f"{{{C}}}schedule-inbox") is not None
    assert "schedule-deliver" in privileges(inbox)
    assert found(inbox, "404").find("{DAV:}displayname") is not None
    outbox = listing[HOME + "outbox/"]
    assert privileges(outbox) == {"read", "read-free-busy", "read-current-user-privilege-set", "schedule-send"}
    assert found(outbox, "404").find(f"{{{CS}}}getctag") is not None
    notification = listing[HOME + "notification/"]
    assert found(notification).find("{DAV:}resourcetype").find(f"{{{CS}}}notification") is not None
    assert privileges(notification) == {"read", "read-current-user-privilege-set", "unbind"}
    assert privileges(listing[HOME + "work/"]) >= {"write", "bind", "unbind", "write-content"}


async def test_legacy_reminders_variant_is_configurable(tmp_path) -> None:  # 9 (legacy name)
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        '[[account]]\napple_id = "a@icloud.test"\ndsid = "555000111"\napp_passwords = ["wxyz-wxyz-wxyz-wxyz"]\n'
        '[[account.calendar]]\nid = "tasks"\ndisplayname = "Reminders ⚠️"\ncomponent = "VTODO"\n',
        encoding="utf-8",
    )
    async with EmulatorServer(accounts=load_accounts(accounts)) as emu, aiohttp.ClientSession() as session:
        reply = await Dav(session, emu).request(
            "PROPFIND", "/555000111/calendars/tasks/", "", auth=basic("a@icloud.test", "wxyz-wxyz-wxyz-wxyz"),
            headers={"Depth": "0"},
        )
    assert "Reminders ⚠️" in reply.text


async def test_undefined_properties_come_back_in_a_separate_404_propstat(dav: Dav) -> None:  # 10
    reply = await dav.propfind(HOME + "home/", "<displayname/>", "<CS:no-such-thing/>", "<getlastmodified/>")
    response = responses_by_href(reply.text)[HOME + "home/"]
    assert found(response).findtext("{DAV:}displayname") == "Home"
    missing = found(response, "404")
    assert {child.tag for child in missing} == {f"{{{CS}}}no-such-thing", "{DAV:}getlastmodified"}
    assert all(len(child) == 0 and not child.text for child in missing)
    assert "<status>HTTP/1.1 404 Not Found</status>" in reply.text


async def test_color_ctag_and_sync_token(dav: Dav) -> None:  # 11
    properties = ("<A:calendar-color/>", "<CS:getctag/>", "<sync-token/>")
    first = await dav.propfind(HOME + "work/", *properties)
    assert '<calendar-color xmlns="http://apple.com/ns/ical/">' in first.text
    before = found(responses_by_href(first.text)[HOME + "work/"])
    assert re.fullmatch(r"#[0-9A-F]{8}", before.findtext("{http://apple.com/ns/ical/}calendar-color"))
    assert (await dav.put(HOME + "work/a.ics", event("ctag-1"))).status == 201
    after = found(responses_by_href((await dav.propfind(HOME + "work/", *properties)).text)[HOME + "work/"])
    assert after.findtext(f"{{{CS}}}getctag") != before.findtext(f"{{{CS}}}getctag")
    assert after.findtext("{DAV:}sync-token") != before.findtext("{DAV:}sync-token")
    assert after.findtext("{DAV:}sync-token")


async def test_shared_in_view_only_calendar(dav: Dav) -> None:  # 12
    shared = HOME + shared_calendar_id(APPLE_ID, "team") + "/"
    assert re.fullmatch(r"[0-9a-f]{64}", shared.split("/")[-2])
    reply = await dav.propfind(shared, "<current-user-privilege-set/>", "<resourcetype/>")
    granted = privileges(responses_by_href(reply.text)[shared])
    assert not granted & {"write", "bind", "unbind", "write-content"}
    assert (await dav.put(shared + "x.ics", event("shared-1"))).status == 403
    assert (await dav.request("DELETE", shared + "x.ics")).status in (403, 404)
    assert (await dav.request("DELETE", shared)).status == 403


async def test_subscribed_calendar_has_source_and_empty_query(dav: Dav) -> None:  # 13
    listing = responses_by_href((await dav.propfind(HOME, "<resourcetype/>", "<CS:source/>", depth="1")).text)
    subscribed = [href for href, r in listing.items()
                  if found(r).find("{DAV:}resourcetype").find(f"{{{CS}}}subscribed") is not None]
    assert len(subscribed) == 1
    properties = found(listing[subscribed[0]])
    assert properties.find("{DAV:}resourcetype").find(f"{{{C}}}calendar") is None
    assert properties.find(f"{{{CS}}}source/{{DAV:}}href").text.startswith("https://")
    query = (
        '<?xml version="1.0" encoding="UTF-8"?><C:calendar-query xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        '<prop><getetag/></prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/>'
        "</C:comp-filter></C:filter></C:calendar-query>"
    )
    reply = await dav.report(subscribed[0], query)
    assert reply.status == 207
    assert ElementTree.fromstring(reply.text.encode()).findall("{DAV:}response") == []


def mkcalendar_body(*components: str) -> str:
    comps = "".join(f'<C:comp name="{c}"/>' for c in components)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><C:mkcalendar xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        f"<set><prop><displayname>New</displayname><C:supported-calendar-component-set>{comps}"
        "</C:supported-calendar-component-set></prop></set></C:mkcalendar>"
    )


async def test_mkcalendar_allows_one_component_type_and_mkcol_is_refused(dav: Dav) -> None:  # 14
    assert (await dav.request("MKCALENDAR", HOME + "new-one/", mkcalendar_body("VEVENT"))).status == 201
    assert (await dav.request("MKCALENDAR", HOME + "12345@example.com/", mkcalendar_body("VTODO"))).status == 201
    refused = await dav.request("MKCALENDAR", HOME + "mixed/", mkcalendar_body("VEVENT", "VTODO"))
    assert refused.status == 400
    assert "SupportedCalendarComponentSet length exceeded" in refused.text
    assert refused.headers["Content-Type"].startswith("text/html")
    listing = responses_by_href((await dav.propfind(HOME, "<displayname/>", depth="1")).text)
    assert HOME + "new-one/" in listing and HOME + "mixed/" not in listing
    assert (await dav.request("MKCOL", HOME + "extended/", "<mkcol xmlns='DAV:'/>")).status in (403, 405)
