"""Items read without their text (a whole collection, a large multiget or sync): they describe what items read
with it describe, read their texts in one pass when something needs one, and answer CalDAV alike."""

from __future__ import annotations

from datetime import timedelta

import defusedxml.ElementTree as ET
import pytest
import requests
import sqlalchemy as sa
from radicale import storage as radicale_storage

from plugins.sqlstore import collection as sql_collection
from proxy.keys import ENGINE
from tests.helpers import event, mkcalendar
from tests.storage.test_sqlstore import START

DAV = "{DAV:}"
#: Items per IN list in this test (instead of hundreds), and more items than that: a batch's texts take two.
CHUNK = 4
COUNT = 7


def described(item) -> tuple:
    return (item.href, item.etag, item.uid, item.name, item.component_name, item.time_range, item.last_modified,
            item.serialize(), item.vobject_item.serialize())


@pytest.fixture
def filled(calrelay, monkeypatch):
    monkeypatch.setattr(sql_collection, "_CHUNK", CHUNK)
    auth = calrelay.auth("alice")
    assert mkcalendar(f"{calrelay.url}alice/many/", auth, "Many").status_code == 201
    calrelay.app[ENGINE].put_items("/alice/many/", [
        (f"e{n:04}.ics", event(f"e{n:04}", START + timedelta(hours=n), extra=(
            "RRULE:FREQ=DAILY;COUNT=3\r\n" if n % 3 == 0 else ""))) for n in range(COUNT)])
    return calrelay


def test_a_lazy_item_is_the_item_read_with_its_text_and_the_batch_reads_the_texts_at_once(filled) -> None:
    storage = filled.app[ENGINE].storage
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    with storage.acquire_lock("r", "alice"):
        collection = next(iter(storage.discover("/alice/many/")))
        hrefs = [f"e{n:04}.ics" for n in range(COUNT)]
        eager = {href: described(item) for href, item in collection.get_multi(hrefs[:3])}
        items = list(collection.get_all())
        sa.event.listen(storage.engine, "before_cursor_execute", count)
        try:
            lazy = [described(item) for item in items]
        finally:
            sa.event.remove(storage.engine, "before_cursor_execute", count)
        many = dict(collection.get_multi(reversed(hrefs)))
    assert [row[0] for row in lazy] == hrefs
    assert {row[0]: row for row in lazy[:3]} == eager
    assert [described(many[href]) for href in hrefs] == lazy
    assert len(statements) == 2  # the texts of the whole batch: one statement per chunk of hrefs


def test_a_text_read_after_the_lock_is_the_current_one_and_a_deleted_item_says_so(filled) -> None:
    engine = filled.app[ENGINE]
    storage = engine.storage
    with storage.acquire_lock("r", "alice"):
        items = {item.href: item for item in next(iter(storage.discover("/alice/many/"))).get_all()}
    changed = event("e0001", START, summary="Changed meanwhile")
    engine.put_item("/alice/many/", "e0001.ics", changed)
    assert engine.delete_item("/alice/many/", "e0002.ics")
    assert "Changed meanwhile" in items["e0001.ics"].serialize()
    with pytest.raises(radicale_storage.ComponentNotFoundError):
        items["e0002.ics"].serialize()


def test_propfind_of_lazy_items_answers_as_reading_each_one(filled) -> None:
    """Depth 1 (the items read without their text) reports what Depth 0 on each item reports, content
    length included (which needs the text)."""
    auth = filled.auth("alice")
    url = f"{filled.url}alice/many/"
    body = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:getcontenttype/>'
            b"<D:getcontentlength/><D:getlastmodified/><D:resourcetype/></D:prop></D:propfind>")

    def answers(target: str, depth: str) -> dict[str, bytes]:
        response = requests.request("PROPFIND", target, auth=auth, data=body, headers={"Depth": depth}, timeout=60)
        assert response.status_code == 207, response.text
        return {(r.findtext(f"{DAV}href") or ""): ET.tostring(r) for r in ET.fromstring(response.content)
                .iter(f"{DAV}response")}

    whole = answers(url, "1")
    assert len(whole) == COUNT + 1
    for n in (0, 1, COUNT - 1):
        href = f"/alice/many/e{n:04}.ics"
        assert answers(f"{filled.url.rstrip('/')}{href}", "0") == {href: whole[href]}
        length = ET.fromstring(whole[href]).findtext(f".//{DAV}getcontentlength")
        assert length == str(len(requests.get(f"{filled.url.rstrip('/')}{href}", auth=auth, timeout=10).content))
