"""Checklist 15–22: PUT/GET/DELETE semantics, preconditions, UID uniqueness, the DTEND rule, ETag churn."""

from __future__ import annotations

import re

from proxy.emulator import EmulatorServer
from tests.emulator.conftest import APPLE_ID, HOME, Dav, event

HOME_CAL = HOME + "home/"


async def test_create_with_if_none_match_then_repeat_is_412(dav: Dav) -> None:  # 15
    body = event("create-1")
    created = await dav.put(HOME_CAL + "create-1.ics", body, **{"If-None-Match": "*"})
    assert created.status == 201
    assert re.fullmatch(r'"[a-z0-9]{6,12}"', created.headers["ETag"])
    again = await dav.put(HOME_CAL + "create-1.ics", body, **{"If-None-Match": "*"})
    assert again.status == 412


async def test_if_match_updates_with_a_new_etag_and_stale_is_412(dav: Dav) -> None:  # 16
    first = await dav.put(HOME_CAL + "u.ics", event("upd-1"))
    etag = first.headers["ETag"]
    updated = await dav.put(HOME_CAL + "u.ics", event("upd-1", extra="LOCATION:Here"), **{"If-Match": etag})
    assert updated.status in (201, 204)
    assert updated.headers["ETag"] != etag
    stale = await dav.put(HOME_CAL + "u.ics", event("upd-1"), **{"If-Match": etag})
    assert stale.status == 412
    blind = await dav.put(HOME_CAL + "u.ics", event("upd-1", extra="LOCATION:There"))
    assert blind.status in (201, 204)
    assert "LOCATION:There" in (await dav.request("GET", HOME_CAL + "u.ics")).text


async def test_any_resource_name_is_kept_as_given(dav: Dav) -> None:  # 17
    for name, uid in (("foo.ics", "name-a"), ("1.ics", "name-b"), ("no-extension", "name-c")):
        assert (await dav.put(HOME_CAL + name, event(uid))).status == 201
        assert (await dav.request("GET", HOME_CAL + name)).status == 200
        assert (await dav.request("GET", HOME_CAL + f"{uid}.ics")).status == 404


async def test_uid_is_unique_across_the_account(dav: Dav) -> None:  # 18
    assert (await dav.put(HOME_CAL + "dup.ics", event("dup-uid"))).status == 201
    assert (await dav.put(HOME + "work/dup.ics", event("dup-uid"))).status == 412
    assert (await dav.put(HOME_CAL + "other-name.ics", event("dup-uid"))).status == 412
    # Moving the UID (delete first, then create) is fine.
    assert (await dav.request("DELETE", HOME_CAL + "dup.ics")).status == 204
    assert (await dav.put(HOME + "work/dup.ics", event("dup-uid"))).status == 201


async def test_vevent_without_dtend_is_404_and_with_dtend_201(dav: Dav) -> None:  # 19
    assert (await dav.put(HOME_CAL + "nodtend.ics", event("nodtend", end=None))).status == 404
    same = event("nodtend", start="20260501T100000Z", end="20260501T100000Z")
    assert (await dav.put(HOME_CAL + "nodtend.ics", same)).status == 201
    duration = event("withduration", end=None, extra="DURATION:PT1H")
    assert (await dav.put(HOME_CAL + "duration.ics", duration)).status == 201


async def test_bad_content_type_bad_body_and_wrong_component(dav: Dav) -> None:  # 20
    wrong_type = await dav.request("PUT", HOME_CAL + "x.ics", event("ct"), headers={"Content-Type": "text/xml"})
    assert wrong_type.status in (400, 415)
    assert (await dav.put(HOME_CAL + "x.ics", "this is not iCalendar")).status == 400
    todo = event("todo-1").replace("VEVENT", "VTODO")
    assert (await dav.put(HOME_CAL + "todo.ics", todo)).status == 403
    assert (await dav.put(HOME + "tasks/todo.ics", todo)).status == 201


async def test_get_and_delete_semantics(dav: Dav) -> None:  # 21
    # With its own alarm the event is stored as sent (no default alarm is added).
    body = event("gd-1", extra="BEGIN:VALARM\nACTION:DISPLAY\nDESCRIPTION:x\nTRIGGER:-PT5M\nEND:VALARM")
    etag = (await dav.put(HOME_CAL + "gd.ics", body)).headers["ETag"]
    got = await dav.request("GET", HOME_CAL + "gd.ics")
    assert got.status == 200 and got.text == body and got.headers["ETag"] == etag
    assert got.headers["Content-Type"].startswith("text/calendar")
    assert (await dav.request("GET", HOME_CAL + "missing.ics")).status == 404
    assert (await dav.request("DELETE", HOME_CAL + "gd.ics", headers={"If-Match": '"stale"'})).status == 412
    assert (await dav.request("DELETE", HOME_CAL + "gd.ics", headers={"If-Match": etag})).status == 204
    assert (await dav.request("DELETE", HOME_CAL + "gd.ics")).status == 404
    assert (await dav.request("GET", HOME_CAL + "gd.ics")).status == 404


async def test_etag_churn_without_a_client_write(emulator: EmulatorServer, dav: Dav) -> None:  # 22
    etag = (await dav.put(HOME_CAL + "churn.ics", event("churn-1"))).headers["ETag"]
    # One-shot churn through the control API.
    result = await emulator.control("POST", "churn", {"apple_id": APPLE_ID, "calendar": "home", "name": "churn.ics"})
    assert result["changed"] == [HOME_CAL + "churn.ics"]
    churned = (await dav.request("GET", HOME_CAL + "churn.ics")).headers["ETag"]
    assert churned != etag
    assert (await dav.put(HOME_CAL + "churn.ics", event("churn-1"), **{"If-Match": etag})).status == 412
    # The switch: every request sees new ETags until it is switched off.
    emulator.set_faults(etag_churn=True)
    first = (await dav.request("GET", HOME_CAL + "churn.ics")).headers["ETag"]
    second = (await dav.request("GET", HOME_CAL + "churn.ics")).headers["ETag"]
    assert first != second
    assert (await dav.put(HOME_CAL + "churn.ics", event("churn-1"), **{"If-Match": second})).status == 412
    emulator.set_faults(etag_churn=False)
    stable = (await dav.request("GET", HOME_CAL + "churn.ics")).headers["ETag"]
    assert (await dav.request("GET", HOME_CAL + "churn.ics")).headers["ETag"] == stable
    assert (await dav.put(HOME_CAL + "churn.ics", event("churn-1"), **{"If-Match": stable})).status == 204
