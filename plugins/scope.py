"""What one request tells the front door besides its HTTP response.

Radicale calls its plugins deep inside a request, in a worker thread, often while holding its storage lock.
The plugins therefore never act on the event loop themselves: they record what changed and, when they refuse
something, why, into the scope of the current request. The front door opens a scope around every call into
Radicale and reads it once the call has returned (and the lock has been released).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum


class ChangeAction(StrEnum):
    ITEM_PUT = "item-put"  # an object created or replaced
    ITEM_DELETE = "item-delete"
    ITEM_MOVE = "item-move"  # ``path``/``href`` is the source, ``target`` the destination collection
    COLLECTION_CREATE = "collection-create"  # MKCALENDAR, MKCOL, or a whole-calendar PUT (import)
    COLLECTION_DELETE = "collection-delete"
    COLLECTION_PROPS = "collection-props"  # PROPPATCH


@dataclass(frozen=True)
class Change:
    """One change the relay must see. ``path`` is a collection path such as ``/alice/work/``."""

    action: ChangeAction
    path: str
    href: str | None = None
    target: str | None = None

    @property
    def user(self) -> str:
        return self.path.strip("/").split("/", 1)[0]


@dataclass
class RequestScope:
    changes: list[Change] = field(default_factory=list)
    refusal: str | None = None  # a message for the client when a plugin refused the request
    warnings: list[str] = field(default_factory=list)  # what Radicale logged about this request
    failure: BaseException | None = None  # the exception Radicale turned into a 500, if any
    #: (user, path) -> the user's permissions there, decided once per request (Radicale asks per item)
    authorizations: dict[tuple[str, str], str] = field(default_factory=dict)


_current: ContextVar[RequestScope | None] = ContextVar("calrelay_request_scope", default=None)


@contextmanager
def request_scope() -> Iterator[RequestScope]:
    scope = RequestScope()
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def current() -> RequestScope | None:
    return _current.get()


class WarningCollector(logging.Handler):
    """Keeps Radicale's warnings about the current request, whose texts name what was wrong with it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        scope = current()
        if scope is not None:
            scope.warnings.append(record.getMessage())
            if record.exc_info and record.exc_info[1] is not None and scope.failure is None:
                scope.failure = record.exc_info[1]


def refuse(message: str) -> None:
    """Record why the current request is refused; the front door puts it in the response body."""
    scope = current()
    if scope is not None and scope.refusal is None:
        scope.refusal = message
