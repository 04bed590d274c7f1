"""``calendar-query`` with a prop-filter directly under the VCALENDAR comp-filter (no component type).

RFC 4791 puts a prop-filter inside the comp-filter of the component whose property it tests, so a filter
``VCALENDAR > prop-filter CATEGORIES`` strictly tests the VCALENDAR object's own properties, which have no
CATEGORIES, and Radicale matches nothing. Clients that search "any object whose CATEGORIES/SUMMARY …" send
exactly that, and expect the properties of the calendar's components to match. So calrelay moves such
prop-filters into a comp-filter for each component type the calendar holds (of VEVENT, VTODO, VJOURNAL),
asks Radicale once per type, and answers the union, each object once. Prop-filters on the VCALENDAR's own
properties (PRODID, VERSION, CALSCALE, METHOD) stay where they are; everything else in the filter keeps its
meaning.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from radicale import pathutils

from proxy.engine import Engine
from proxy.interop.davxml import CALDAV, DAV, href_of, parse, serialize, xml_response
from proxy.keys import ENGINE

#: Properties of the VCALENDAR object itself (RFC 5545 §3.7), which a prop-filter there really means.
CALENDAR_PROPERTIES = frozenset({"PRODID", "VERSION", "CALSCALE", "METHOD"})
COMPONENT_TYPES = ("VEVENT", "VTODO", "VJOURNAL")


def _calendar_filter(root: ET.Element) -> ET.Element | None:
    comp = root.find(f"{CALDAV}filter/{CALDAV}comp-filter")
    return comp if comp is not None and comp.get("name", "").upper() == "VCALENDAR" else None


def component_prop_filters(root: ET.Element) -> list[ET.Element]:
    """The prop-filters directly under the VCALENDAR comp-filter that test component properties."""
    calendar = _calendar_filter(root)
    if calendar is None:
        return []
    return [
        child for child in calendar.findall(CALDAV + "prop-filter")
        if child.get("name", "").upper() not in CALENDAR_PROPERTIES
    ]


def per_component_queries(root: ET.Element, components: Sequence[str] = COMPONENT_TYPES) -> list[bytes]:
    """One calendar-query body per component type, with the component prop-filters moved into it."""
    bodies = []
    for component in components:
        query = copy.deepcopy(root)
        calendar = _calendar_filter(query)
        assert calendar is not None
        moved = component_prop_filters(query)
        for prop_filter in moved:
            calendar.remove(prop_filter)
        wrapper = ET.SubElement(calendar, CALDAV + "comp-filter", {"name": component})
        wrapper.extend(moved)
        bodies.append(serialize(query))
    return bodies


def supported_components(engine: Engine, path: str) -> tuple[str, ...]:
    """The component types the calendar at ``path`` holds (all three when unknown). Blocking.

    Only spares Radicale queries that cannot match: access is still checked by Radicale on each query.
    """
    try:
        sane = pathutils.strip_path(pathutils.sanitize_path(path))
    except ValueError:
        return COMPONENT_TYPES
    if not sane:
        return COMPONENT_TYPES
    with engine.storage.acquire_lock("r", sane.split("/", 1)[0]):
        collection = next(iter(engine.storage.discover("/" + sane + "/")), None)
        declared = collection.get_meta("C:supported-calendar-component-set") if collection is not None else None
    if not isinstance(declared, str) or not declared:
        return COMPONENT_TYPES
    held = {name.strip().upper() for name in declared.split(",")}
    return tuple(component for component in COMPONENT_TYPES if component in held) or COMPONENT_TYPES


async def calendar_query(
    request: web.Request, root: ET.Element, forward: Callable[[bytes], Awaitable[web.Response]]
) -> web.StreamResponse | None:
    if not component_prop_filters(root):
        return None  # a filter Radicale understands as it is
    engine = request.app[ENGINE]
    components = await engine.call(supported_components, engine, request.path)
    merged = ET.Element(DAV + "multistatus")
    seen: set[str] = set()
    for body in per_component_queries(root, components):
        answer = await forward(body)
        tree = parse(bytes(answer.body)) if answer.status == 207 and answer.body is not None else None
        if tree is None:
            return answer  # Radicale's refusal (bad filter, no access, …) as it is
        for response in tree.findall(DAV + "response"):
            if href_of(response) not in seen:
                seen.add(href_of(response))
                merged.append(response)
    return xml_response(merged)
