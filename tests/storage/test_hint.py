"""What the storage learns of a REPORT (plugins.sqlstore.hint), read from the element Radicale parsed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from plugins.sqlstore import hint

NS = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"'
EXPAND = ('<D:prop><C:calendar-data><C:expand start="20270607T000000Z" end="20270614T000000Z"/>'
          "</C:calendar-data></D:prop>")
WEEK = (int(datetime(2027, 6, 7, tzinfo=UTC).timestamp()), int(datetime(2027, 6, 14, tzinfo=UTC).timestamp()))


def query(prop: str, filters: str) -> str:
    return (f'<C:calendar-query {NS}>{prop}<C:filter><C:comp-filter name="VCALENDAR">{filters}'
            "</C:comp-filter></C:filter></C:calendar-query>")


def week(start: str = "20270607T000000Z", end: str = "20270614T000000Z", comp: str = "VEVENT") -> str:
    return f'<C:comp-filter name="{comp}"><C:time-range start="{start}" end="{end}"/></C:comp-filter>'


@pytest.mark.parametrize(("body", "want"), [
    (query(EXPAND, week()), hint.ReportHint(True, WEEK)),
    (query("<D:prop><D:getetag/></D:prop>", week()), hint.NO_HINT),
    (query(EXPAND, week(comp="VTODO")), hint.ReportHint(True, None)),  # no VEVENT range: no narrowing
    (query(EXPAND, week() + week()), hint.ReportHint(True, None)),  # two ranges: which one?
    (query(EXPAND, week(start="2027-06-07")), hint.ReportHint(True, None)),  # Radicale refuses it itself
    (f'<C:calendar-multiget {NS}>{EXPAND}<D:href>/a/b/c.ics</D:href></C:calendar-multiget>',
     hint.ReportHint(True, None)),
    (f'<D:sync-collection {NS}><D:sync-token/><D:prop><D:getetag/></D:prop></D:sync-collection>', hint.NO_HINT),
], ids=["expanding week", "not expanding", "other component", "two ranges", "bad instant", "multiget",
        "sync-collection"])
def test_the_hint_of_a_report(body: str, want: hint.ReportHint) -> None:
    assert hint.read(ET.fromstring(body)) == want


def test_no_body_no_hint() -> None:
    assert hint.read(None) == hint.NO_HINT
