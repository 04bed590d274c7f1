"""Each calendar object vobject parses reads its times by its own VTIMEZONEs, not by another object's.

vobject keeps one process-wide map from TZID to time zone. The first VTIMEZONE it ever parses under a TZID
is registered there and never replaced (``registerTzinfo`` registers only an unknown TZID), and every later
object's ``DTSTART;TZID=...`` is read by the registered zone, whatever that object's own VTIMEZONE says
(vobject issue #153, open). In a server that is one user's calendar deciding how every other user's events
are read: a client that sends a ``Europe/Berlin`` without its summer time shifts everyone's Berlin
summer by an hour, in Radicale's filters and expansions alike, until the process restarts.

:func:`install` wraps vobject's one parse entry point (``readComponents``; ``readOne`` and Radicale's
``read_components`` go through it) so that each parse starts from an empty map: a TZID the object defines
is read by its own definition, one it does not define falls back to vobject's own lookup (pytz, the IANA
database). Zones are shared per *definition* (TZID and the VTIMEZONE's text), so objects that carry the
same VTIMEZONE still share one zone object and the transitions dateutil has worked out for it.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime, tzinfo
from typing import Any

import vobject
import vobject.base
import vobject.icalendar

#: vobject's process-wide map (a module global, looked up by name at every call).
_MAP_NAME = "__tzidMap"
#: How many distinct VTIMEZONE definitions keep their zone (a CRM's calendars use a few dozen).
KNOWN_LIMIT = 1024

_VTIMEZONE = re.compile(r"^BEGIN:VTIMEZONE\r?\n.*?^END:VTIMEZONE\r?$", re.MULTILINE | re.DOTALL | re.IGNORECASE)
_TZID = re.compile(r"^TZID[;:](?:[^:\r\n]*:)?([^\r\n]*)", re.MULTILINE | re.IGNORECASE)

# One parse at a time swaps the map: vobject reads it as a global. Parsing is pure Python under the GIL, so
# serialising it costs no parallelism.
_lock = threading.RLock()
_known: OrderedDict[tuple[str, str], tzinfo] = OrderedDict()
_original_read_components = vobject.base.readComponents
_original_serialize = vobject.base.VBase.serialize
#: Set while this thread serialises: vobject serialises a component's children through the same method.
_serialising = threading.local()


def definitions(text: str) -> dict[str, tuple[str, str]]:
    """The TZIDs the VTIMEZONEs of ``text`` define, each with the key of its definition."""
    found: dict[str, tuple[str, str]] = {}
    for block in _VTIMEZONE.finditer(text):
        match = _TZID.search(block.group(0))
        if match:
            tzid = match.group(1).strip()
            digest = hashlib.blake2b(block.group(0).replace("\r\n", "\n").encode(), digest_size=16).hexdigest()
            found[tzid] = (tzid, digest)
    return found


def _read_components(stream: Any, *args: Any, **kwargs: Any) -> Iterator[vobject.base.Component]:
    text = stream if isinstance(stream, str) else stream.read()
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    defined = definitions(text) if "VTIMEZONE" in text.upper() else {}
    with _lock:
        fresh: dict[str, tzinfo] = {tzid: _known[key] for tzid, key in defined.items() if key in _known}
        module = vobject.icalendar.__dict__
        saved = module[_MAP_NAME]
        module[_MAP_NAME] = fresh
        try:
            components = list(_original_read_components(text, *args, **kwargs))
        finally:
            module[_MAP_NAME] = saved
        for tzid, key in defined.items():
            if key in _known:
                _known.move_to_end(key)
            elif tzid in fresh:
                _known[key] = fresh[tzid]
                while len(_known) > KNOWN_LIMIT:
                    _known.popitem(last=False)
    yield from components


def own_zones(root: vobject.base.VBase) -> dict[str, tzinfo]:
    """TZID -> zone of every time value in ``root`` (by the TZID vobject would register the zone under)."""
    zones: dict[str, tzinfo] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, vobject.base.Component):
            stack.extend(node.getChildren())
            continue
        value = getattr(node, "value", None)
        for instant in value if isinstance(value, list) else (value,):
            if isinstance(instant, datetime) and instant.tzinfo is not None:
                try:
                    tzid = vobject.icalendar.TimezoneComponent.pickTzid(instant.tzinfo)
                except vobject.base.VObjectError:
                    continue
                if tzid:
                    zones.setdefault(tzid, instant.tzinfo)
    return zones


def _serialize(self: vobject.base.VBase, *args: Any, **kwargs: Any) -> Any:
    if getattr(_serialising, "active", False):
        return _original_serialize(self, *args, **kwargs)
    with _lock:
        module = vobject.icalendar.__dict__
        saved = module[_MAP_NAME]
        module[_MAP_NAME] = own_zones(self)
        _serialising.active = True
        try:
            return _original_serialize(self, *args, **kwargs)
        finally:
            _serialising.active = False
            module[_MAP_NAME] = saved


def install() -> None:
    """Make every vobject parse and serialisation in this process read TZIDs by the object's own zones
    (idempotent)."""
    vobject.base.readComponents = _read_components
    vobject.readComponents = _read_components
    vobject.base.VBase.serialize = _serialize
