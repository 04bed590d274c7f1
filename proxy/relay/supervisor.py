"""The relay inside the server: one :class:`LinkWorker` per linked user, kept in step with the state DB.

- Links are (re)loaded at start, when the link API changes one, and when another process (the CLI) commits
  to the relay state, which is noticed by polling its generation counter every second.
- Storage changes (the engine's change bus) wake the worker of the user they concern: a CRM write reaches
  iCloud within moments. Relay work recorded in the outbox by another process wakes it within a second.
- ``freshness(user)`` tells the availability engine how recent each mirror is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from plugins.scope import Change
from proxy.availability.sources import SourceFreshness
from proxy.outage import database_unavailable
from proxy.relay import outbox
from proxy.relay.worker import LinkWorker, RelayContext

logger = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0


class Relay:
    def __init__(self, context: RelayContext) -> None:
        self.context = context
        self._workers: dict[str, tuple[LinkWorker, asyncio.Task[None], float]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._reloading = asyncio.Lock()
        self._reloads: set[asyncio.Task[None]] = set()  # referenced until done, as asyncio requires
        # Pulls of different users run concurrently, this many at a time.
        self._import_slots = asyncio.Semaphore(max(1, context.settings.upstream.max_imports))

    async def start(self) -> None:
        await self.reload()
        self._watcher = asyncio.create_task(self._watch(), name="relay-watch")

    async def stop(self) -> None:
        tasks = [task for _, task, _ in self._workers.values()]
        if self._watcher is not None:
            tasks.append(self._watcher)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()

    def worker(self, user: str) -> LinkWorker | None:
        entry = self._workers.get(user)
        return entry[0] if entry else None

    async def reload(self) -> None:
        """Start workers for new links, restart changed ones, stop removed ones."""
        state = self.context.state
        async with self._reloading:
            links = {link.user: link for link in await state.call(state.db.links)}
            for user in list(self._workers):
                worker, task, updated_at = self._workers[user]
                if user not in links or links[user].updated_at not in (updated_at, worker.link.updated_at):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    del self._workers[user]
                    if user not in links:
                        # The worker may have recorded an outcome after the link was deleted: drop it too.
                        await state.call(state.db.delete_link, user)
                    logger.info("relay for %s stopped (%s)", user, "unlinked" if user not in links else "link changed")
            for user, link in links.items():
                if user in self._workers:
                    continue
                calendars = await state.call(state.db.link_calendars, user)
                worker = LinkWorker(link, calendars, self.context, self._import_slots)
                task = asyncio.create_task(worker.run(), name=f"relay-{user}")
                self._workers[user] = (worker, task, link.updated_at)
                logger.info("relay for %s started (%s, %d calendars)", user, link.mode, len(calendars))

    def link_changed(self, user: str) -> None:
        """Called by the link service in this process: pick the change up now rather than at the next poll."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def on_change(self, change: Change) -> None:
        worker = self.worker(change.user)
        if worker is not None:
            worker.on_change(change)

    def sync_now(self, user: str) -> bool:
        worker = self.worker(user)
        if worker is None:
            return False
        worker.wake(pull=True)
        return True

    def addresses(self, user: str) -> list[str]:
        """The user's own calendar-user addresses, so availability recognises their declines."""
        worker = self.worker(user)
        own = [user] if "@" in user else []
        return own + ([f"mailto:{worker.link.apple_id}"] if worker is not None else [])

    def freshness(self, user: str) -> Mapping[str, SourceFreshness]:
        worker = self.worker(user)
        if worker is None:
            return {}
        reconnect = worker.link.state != "connected"
        return {
            calendar.mirror_path: SourceFreshness(
                last_success=datetime.fromtimestamp(calendar.last_success_at, UTC)
                if calendar.last_success_at
                else None,
                stale=reconnect,
                error=worker.link.last_error if reconnect else calendar.last_error,
            )
            for calendar in worker.calendars.values()
        }

    async def _watch(self) -> None:
        state = self.context.state
        seen: int | None = None  # unknown if the database is unavailable now
        with contextlib.suppress(Exception):
            seen = await state.call(state.db.data_version)
        outbox_seen = 0
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                version = await state.call(state.db.data_version)
                if version != seen:
                    await self.reload()  # reload is idempotent: after an outage, one reload too many is harmless
                    seen = version
                for user in await state.call(state.db.take_sync_requests):
                    self.sync_now(user)
                # Relay work recorded by another process or instance (proxy.relay.outbox) wakes the link here.
                outbox_seen, users = await state.call(outbox.newest_ids, state.db.engine, outbox_seen)
                for user in users:
                    if (worker := self.worker(user)) is not None:
                        worker.wake()
                if unlinked := [user for user in users if self.worker(user) is None]:
                    await state.call(outbox.drop_users, state.db.engine, unlinked)
            except Exception as error:  # keep watching whatever happened
                if not database_unavailable(error):  # an outage is logged once, by proxy.outage
                    logger.exception("relay watcher")
