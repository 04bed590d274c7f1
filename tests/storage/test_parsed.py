"""The cache of parsed items (plugins.sqlstore.parsed): what Radicale makes of a cached item is what it makes
of a freshly parsed one, and the cache stays within its budget."""

from __future__ import annotations

import copy
import itertools
import xml.etree.ElementTree as ET

from radicale import item as radicale_item
from radicale.app import report

from plugins.sqlstore import parsed
from tests.storage.test_sqlstore import EDGES, edge_windows


def expanded(item: radicale_item.Item, start, end) -> tuple[str | None, object]:
    """Radicale's expansion of ``item``, or the error it fails with (it cannot expand a floating series)."""
    try:
        element, count = report._expand(ET.Element("calendar-data"), copy.copy(item), start, end, start, end, 0)
    except Exception as error:
        return None, repr(error)
    return element.text, count


def test_a_cached_item_expands_and_serializes_as_a_freshly_parsed_one() -> None:
    cache = parsed.ParsedCache()
    original, parsed.CACHE = parsed.CACHE, cache
    try:
        for (name, text), (start, end) in itertools.product(EDGES.items(), edge_windows()[:8]):
            etag = radicale_item.get_etag(text)
            fresh = radicale_item.Item(collection_path="u/c", text=text, etag=etag, href=name)
            want = expanded(fresh, start, end)
            for _ in range(2):  # the first parses and caches, the second reads the cache
                cached = parsed.Item(collection_path="u/c", text=text, etag=etag, href=name)
                assert expanded(cached, start, end) == want, (name, start, end)
                assert cached.vobject_item.serialize() == fresh.vobject_item.serialize()
    finally:
        parsed.CACHE = original
    assert len(cache._entries) == len(EDGES)


def test_each_access_gets_its_own_copy_and_the_budget_holds() -> None:
    text = EDGES["weekly"]
    cache = parsed.ParsedCache(budget=10_000)
    first, second = cache.parse("a", text), cache.parse("a", text)
    assert first is not second
    first.vevent_list[0].summary_list = []  # rewriting one copy leaves the next untouched
    assert cache.parse("a", text).serialize() == second.serialize()
    for n in range(20):
        cache.parse(f"e{n}", text)
    assert 0 < cache._size <= 10_000 and "e19" in cache._entries and "a" not in cache._entries
