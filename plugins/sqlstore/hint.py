"""What a REPORT asks that Radicale does not tell the storage: whether it expands, and over which range.

For a calendar-query with ``<C:expand>``, Radicale removes the time-range from the filters it hands to
``get_filtered`` (it expands first and applies the range to the instances afterwards), so the storage would
have to return the whole calendar; and the storage must refuse a stored runaway rule before Radicale
expands it (``plugins.sqlstore.Collection``). :func:`install` wraps Radicale's ``xml_report`` so that the
request element Radicale has already parsed is read here (the body is parsed once, by Radicale) and the
storage calls made inside the report see :func:`current`. ``get_filtered`` uses the range to return only
candidates: an object with an instance in the range is always among them, and Radicale still applies the
range itself, so the answer is unchanged.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from radicale.app import report

CALDAV = "{urn:ietf:params:xml:ns:caldav}"


@dataclass(frozen=True)
class ReportHint:
    #: The report asks for ``<C:expand>``: the items it reads are about to be expanded.
    expanding: bool = False
    #: The VEVENT time-range of an expanding calendar-query (epoch seconds), when there is exactly one.
    expand_range: tuple[int, int] | None = None


NO_HINT = ReportHint()

_hint: ContextVar[ReportHint] = ContextVar("calrelay_report_hint", default=NO_HINT)


def _instant(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp())
    except ValueError:
        return None


def read(root: ET.Element | None) -> ReportHint:
    """The hint of a REPORT whose (parsed) body is ``root``."""
    if root is None or root.find(f".//{CALDAV}expand") is None:
        return NO_HINT
    if root.tag != f"{CALDAV}calendar-query":
        return ReportHint(expanding=True)
    ranges = [element for comp in root.iter(f"{CALDAV}comp-filter") if comp.get("name", "").upper() == "VEVENT"
              for element in comp.findall(f"{CALDAV}time-range")]
    if len(ranges) != 1:
        return ReportHint(expanding=True)
    start, end = _instant(ranges[0].get("start")), _instant(ranges[0].get("end"))
    return ReportHint(expanding=True, expand_range=None if start is None or end is None else (start, end))


def current() -> ReportHint:
    """The hint of the report being answered (:data:`NO_HINT` outside one)."""
    return _hint.get()


def _hinted(xml_report: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(xml_report)
    def hinted_xml_report(base_prefix: str, path: str, xml_request: ET.Element | None, *args: Any,
                          **kwargs: Any) -> Any:
        token = _hint.set(read(xml_request))
        try:
            return xml_report(base_prefix, path, xml_request, *args, **kwargs)
        finally:
            _hint.reset(token)

    hinted_xml_report.calrelay_hinted = True  # type: ignore[attr-defined]
    return hinted_xml_report


def install() -> None:
    """Wrap Radicale's ``xml_report`` (once per process; ``do_REPORT`` looks it up at every call)."""
    if not getattr(report.xml_report, "calrelay_hinted", False):
        report.xml_report = _hinted(report.xml_report)
