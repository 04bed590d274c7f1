"""The REPORTs calrelay answers itself: the one list a guard that refuses unknown REPORTs must consult.

``CALRELAY_REPORTS`` names, by root element in Clark notation, every REPORT body that calrelay's front door
answers or reshapes before Radicale sees it. This module imports nothing from calrelay, so that any
middleware (e.g. the limits at the front) can use it without pulling in the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

DAV = "{DAV:}"
CALDAV = "{urn:ietf:params:xml:ns:caldav}"

#: REPORT root element (Clark notation) -> what calrelay adds and where.
CALRELAY_REPORTS: Mapping[str, str] = MappingProxyType({
    DAV + "principal-property-search": "RFC 3744 principal search (proxy.interop.principals)",
    DAV + "principal-search-property-set": "RFC 3744 searchable properties (proxy.interop.principals)",
    DAV + "sync-collection": "RFC 6578 DAV:limit paging (proxy.interop.synclimit)",
    CALDAV + "calendar-query": "prop-filter without a component type (proxy.interop.textsearch)",
    CALDAV + "free-busy-query": "free-busy from the availability engine (proxy.availability.freebusy)",
})


def calrelay_answers(report_tag: str) -> bool:
    """Whether calrelay answers (or reshapes) the REPORT whose root element is ``report_tag`` (Clark)."""
    return report_tag in CALRELAY_REPORTS
