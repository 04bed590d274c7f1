"""The storage's batched write (the relay's mirror writes): one revision for the batch, and afterwards the
calendar answers GET, sync and time-range queries exactly as after the same uploads one by one."""

from __future__ import annotations

from datetime import timedelta

import defusedxml.ElementTree as ET
import requests

from proxy.keys import ENGINE
from tests.helpers import event, getctag, mkcalendar, put
from tests.storage.test_sqlstore import START, report, sync


def time_range(url: str, auth: tuple[str, str], start: str, end: str) -> set[str]:
    response = report(url, auth, (
        '<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        '<D:prop><D:getetag/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        f'<C:time-range start="{start}" end="{end}"/></C:comp-filter></C:comp-filter></C:filter>'
        "</C:calendar-query>"))
    assert response.status_code == 207, response.text
    return {(href.text or "").rsplit("/", 1)[-1] for href in ET.fromstring(response.content).iter("{DAV:}href")}


def test_a_batch_is_one_change_and_reads_as_uploads_one_by_one(calrelay) -> None:
    auth = calrelay.auth("alice")
    batched, single = (f"{calrelay.url}alice/{name}/" for name in ("batched", "single"))
    for url in (batched, single):
        assert mkcalendar(url, auth, url).status_code == 201
        for n in range(3):
            assert put(f"{url}e{n}.ics", auth, event(f"e{n}", START + timedelta(hours=n))).status_code == 201
    tokens = {url: sync(url, auth)[0] for url in (batched, single)}
    writes = [
        ("e1.ics", event("e1", START + timedelta(days=1), summary="Moved")),
        ("n0.ics", event("n0", START + timedelta(days=2))),
        ("n1.ics", event("n1", START + timedelta(days=3), extra="RRULE:FREQ=WEEKLY;COUNT=4\r\n")),
        ("n0.ics", event("n0", START + timedelta(days=2, hours=1), summary="Twice in one batch")),
    ]
    engine = calrelay.app[ENGINE]
    before = getctag(batched, auth)
    etags = engine.put_items("/alice/batched/", writes)
    for href, text in writes:
        engine.put_item("/alice/single/", href, text)

    assert getctag(batched, auth) != before
    for url in (batched, single):
        assert sync(url, auth, tokens[url])[1] == {"e1.ics": 200, "n0.ics": 200, "n1.ics": 200}
        assert time_range(url, auth, "20261231T000000Z", "20270101T000000Z") == {"n1.ics"}  # the 4th instance
        assert time_range(url, auth, "20261207T000000Z", "20261208T000000Z") == {"e0.ics", "e2.ics"}
    for (href, _), etag in zip(writes, etags, strict=True):
        got = requests.get(f"{batched}{href}", auth=auth, timeout=30)
        mine = requests.get(f"{single}{href}", auth=auth, timeout=30)
        assert got.status_code == 200 and got.text == mine.text
        if href != "n0.ics":
            assert got.headers["ETag"] == etag
    assert "Twice in one batch" in requests.get(f"{batched}n0.ics", auth=auth, timeout=30).text
