"""The time range of a REPORT with ``expand``, which Radicale hides from the storage.

For a calendar-query with ``<C:expand>``, Radicale removes the time-range from the filters it hands to
``get_filtered`` (it expands first and applies the range to the instances afterwards), so the storage would
have to return the whole calendar. The engine reads the range from the request body here, and
``get_filtered`` uses it to return only candidates: an object with an instance in the range is always among
them, and Radicale still applies the range itself, so the answer is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

import defusedxml.ElementTree as DefusedET

CALDAV = "{urn:ietf:params:xml:ns:caldav}"

_range: ContextVar[tuple[int, int] | None] = ContextVar("calrelay_expand_range", default=None)


def _instant(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp())
    except ValueError:
        return None


def parse(method: str, body: bytes) -> tuple[int, int] | None:
    """The VEVENT time-range of an expanding calendar-query, or None (anything else, or unparsable)."""
    if method != "REPORT" or b"expand" not in body:
        return None
    try:
        root = DefusedET.fromstring(body)
    except Exception:  # Radicale answers the bad body itself
        return None
    if root.tag != f"{CALDAV}calendar-query" or root.find(f".//{CALDAV}expand") is None:
        return None
    ranges = [element for comp in root.iter(f"{CALDAV}comp-filter") if comp.get("name", "").upper() == "VEVENT"
              for element in comp.findall(f"{CALDAV}time-range")]
    if len(ranges) != 1:
        return None
    start, end = _instant(ranges[0].get("start")), _instant(ranges[0].get("end"))
    if start is None or end is None:
        return None
    return start, end


@contextmanager
def expand_hint(method: str, body: bytes) -> Iterator[None]:
    token = _range.set(parse(method, body))
    try:
        yield
    finally:
        _range.reset(token)


def current() -> tuple[int, int] | None:
    return _range.get()
