"""The CRM contract as the storage enforces it, and the request context the storage reads.

- **Validation** on write: ``{urn:calrelay}calendar-kind`` on MKCALENDAR and PROPPATCH, ``X-CALRELAY-KIND`` on
  every VEVENT that is PUT, the write-time limits of :mod:`proxy.validation`, and the mirror properties, which
  only the relay may set. A refusal raises ``ValueError`` (Radicale answers 400) after recording a message for
  the client in the request's scope.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from radicale import item as radicale_item

from plugins import scope
from proxy import validation
from proxy.config import LimitsSettings
from proxy.model import (
    CALENDAR_KIND_PROP,
    EVENT_KIND_PROPERTY,
    MIRROR_BLOCKS_PROP,
    MIRROR_POLICIES_PROP,
    MIRROR_ROLE_PROP,
    MIRROR_SOURCE_PROP,
    CalendarKind,
    EventKind,
)

logger = logging.getLogger(__name__)

RELAY_ONLY_PROPS = (MIRROR_ROLE_PROP, MIRROR_SOURCE_PROP, MIRROR_BLOCKS_PROP, MIRROR_POLICIES_PROP)

# Radicale writes a new collection's props through set_meta while creating it; that is part of the one
# "collection created" change, not a PROPPATCH of its own.
_inside_create: ContextVar[bool] = ContextVar("calrelay_inside_create", default=False)


@contextmanager
def creating() -> Iterator[None]:
    token = _inside_create.set(True)
    try:
        yield
    finally:
        _inside_create.reset(token)


def reject(message: str) -> ValueError:
    scope.refuse(message)
    return ValueError(message)


def validate_props(props: Mapping[str, str], previous: Mapping[str, str] | None = None) -> None:
    """Refuse an unknown calendar kind, and client attempts to turn a collection into a mirror."""
    kind = props.get(CALENDAR_KIND_PROP)
    if kind is not None:
        try:
            CalendarKind.parse(kind)
        except ValueError as error:
            raise reject(f"{CALENDAR_KIND_PROP}: {error}") from None
    if scope.current() is not None:  # a client request, not the relay
        for prop in RELAY_ONLY_PROPS:
            if props.get(prop) != (previous or {}).get(prop):
                raise reject(f"{prop} is managed by calrelay's iCloud link and cannot be set by a client")


def validate_item(item: radicale_item.Item, limits: LimitsSettings | None = None, max_count: int = 20_000) -> None:
    """Refuse a VEVENT whose X-CALRELAY-KIND is neither APPOINTMENT nor BLOCKED, and objects that
    :func:`proxy.validation.calendar_problem` refuses (runaway recurrences, malformed or oversized objects)."""
    if item.vobject_item.name != "VCALENDAR":
        return
    problem = validation.calendar_problem(item.vobject_item, limits or LimitsSettings(), max_count)
    if problem:
        raise reject(problem)
    for component in item.vobject_item.getChildren():
        if component.name != "VEVENT":
            continue
        for line in component.contents.get(EVENT_KIND_PROPERTY.lower(), []):
            try:
                EventKind.parse(str(line.value))
            except ValueError as error:
                uid = component.contents.get("uid", [None])[0]
                where = f" (UID {uid.value})" if uid is not None else ""
                raise reject(f"{error}{where}") from None
