"""The two sides the relay's executors talk to, as narrow protocols.

:class:`Upstream` is the part of :class:`proxy.upstream.UpstreamClient` the relay uses (iCloud);
:class:`LocalStore` is the part of :class:`proxy.engine.Engine` it uses (the calrelay collections), made
awaitable by :class:`EngineStore`. The model test (tests/relay/test_model.py) drives the real planner and
executors against in-memory implementations of both, so the relay code it checks is the code that runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from plugins.sqlstore import Stamp
from proxy.engine import CalendarInfo, Engine, StoredItem
from proxy.upstream import Changes, RemoteObject


class Upstream(Protocol):
    async def calendar_state(self, calendar_url: str) -> tuple[str | None, str | None]: ...

    async def changes(self, calendar_url: str, token: str | None) -> Changes: ...

    async def listing(self, calendar_url: str) -> dict[str, str]: ...

    async def fetch(self, calendar_url: str, hrefs: Iterable[str]) -> dict[str, RemoteObject]: ...

    async def get(self, href: str) -> RemoteObject: ...

    async def create(self, href: str, text: str) -> str: ...

    async def update(self, href: str, text: str, etag: str) -> str: ...

    async def delete(self, href: str, etag: str | None) -> None: ...


class LocalStore(Protocol):
    async def list_calendars(self, user: str) -> list[CalendarInfo]: ...

    async def read_changed_items(
        self, path: str, known: Mapping[str, Stamp]
    ) -> tuple[dict[str, Stamp], list[StoredItem]]: ...

    async def read_item(self, path: str, href: str) -> StoredItem | None: ...

    async def put_item(self, path: str, href: str, text: str) -> str: ...

    async def put_items(self, path: str, items: Sequence[tuple[str, str]]) -> list[str]:
        """Store several objects in one calendar with one storage call; their new ETags, in order."""
        ...

    async def delete_item(self, path: str, href: str) -> bool: ...


class EngineStore:
    """:class:`LocalStore` over the embedded Radicale: each call runs in the engine's thread pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def list_calendars(self, user: str) -> list[CalendarInfo]:
        return await self.engine.call(self.engine.list_calendars, user)

    async def read_changed_items(
        self, path: str, known: Mapping[str, Stamp]
    ) -> tuple[dict[str, Stamp], list[StoredItem]]:
        return await self.engine.call(self.engine.read_changed_items, path, known)

    async def read_item(self, path: str, href: str) -> StoredItem | None:
        return await self.engine.call(self.engine.read_item, path, href)

    async def put_item(self, path: str, href: str, text: str) -> str:
        return await self.engine.call(self.engine.put_item, path, href, text)

    async def put_items(self, path: str, items: Sequence[tuple[str, str]]) -> list[str]:
        return await self.engine.call(self.engine.put_items, path, list(items))

    async def delete_item(self, path: str, href: str) -> bool:
        return await self.engine.call(self.engine.delete_item, path, href)
