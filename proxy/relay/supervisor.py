"""The relay inside the server: one :class:`LinkWorker` per linked user whose lease this instance holds.

- Every instance is a :class:`~proxy.cluster.leases.Member` of the cluster sharing the database (one instance
  alone is a cluster of one). Every quarter of ``[cluster] lease`` it heartbeats, renews its leases and
  rebalances; it runs a worker exactly for the links it holds. A lease lasts three quarters of ``lease``, so
  the links of an instance that died are free, and taken by the next tick of another, within ``lease``
  seconds. A link given up is released only once its worker has stopped; a clean stop releases every lease
  at once.
- Links are (re)loaded at start, on every tick, when the link API changes one, and when another process (the
  CLI) commits to the relay state, which is noticed by polling its generation counter every second.
- Storage changes (the engine's change bus) wake the worker of the user they concern: a CRM write reaches
  iCloud within moments. On PostgreSQL a CRM write taken by another instance arrives as a notification
  (:mod:`proxy.cluster.wakeup`, sent in the write's transaction by :func:`proxy.relay.outbox.record`); the
  outbox, polled every second, is the fallback, and the only path on SQLite.
- ``freshness(user)`` tells the availability engine how recent each mirror is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from plugins.scope import Change
from proxy.availability.sources import SourceFreshness
from proxy.cluster import wakeup
from proxy.cluster.leases import Changes, Member, leave, live_instances
from proxy.outage import database_unavailable, outage
from proxy.relay import outbox
from proxy.relay.worker import LinkWorker, RelayContext
from proxy.state import Link, LinkCalendar

logger = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0
#: A lease lasts this share of ``[cluster] lease`` and is renewed every ``TICK_SHARE`` of it: a dead
#: instance's leases expire at most LEASE_SHARE after its death, and the next tick of a live one takes them.
LEASE_SHARE = 0.75
TICK_SHARE = 0.25
#: A notification asking every instance to rebalance now (one joined, left or gave links up). Not a user
#: name: user names never contain a colon (HTTP Basic authentication could not carry it).
REBALANCE = "cluster:rebalance"


def new_instance_id() -> str:
    """Who this process is in ``calrelay status``: host, process id, and a random part (pids are reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def dead_here(instance_id: str) -> bool:
    """Whether ``instance_id`` was a process on this host that no longer runs (a crash, a SIGKILL): its leases
    need not wait for their expiry. A process of another host, or one whose pid cannot be told, is not."""
    host, _, pid = instance_id.rpartition("-")[0].rpartition("-")  # new_instance_id's host-pid-random
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, another user's
        return False
    return False


class Relay:
    def __init__(self, context: RelayContext, instance_id: str | None = None) -> None:
        self.context = context
        self.instance_id = instance_id or new_instance_id()
        lease = context.settings.cluster.lease
        self.member = Member(context.state.db.engine, self.instance_id, lease_seconds=lease * LEASE_SHARE)
        self._tick = lease * TICK_SHARE
        self._workers: dict[str, tuple[LinkWorker, asyncio.Task[None], float]] = {}
        # Every link and its calendars, whoever relays them, as of the last reload: availability on an instance
        # that does not relay a user still knows the user's iCloud address and how fresh the mirrors are.
        self._links: dict[str, Link] = {}
        self._calendars: dict[str, list[LinkCalendar]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stepping: asyncio.Future[Changes] | None = None  # the lease step running in a thread
        self._reloading = asyncio.Lock()
        self._reloads: set[asyncio.Task[None]] = set()  # referenced until done, as asyncio requires
        # Pulls of different users run concurrently, this many at a time.
        self._import_slots = asyncio.Semaphore(max(1, context.settings.upstream.max_imports))

    @property
    def leases_held(self) -> int:
        return len(self.member.held)

    def linked(self, user: str) -> bool:
        """Whether ``user`` has a link, relayed here or by another instance (as of the last reload)."""
        return user in self._links

    async def start(self) -> None:
        await asyncio.to_thread(self._reap)
        await self.reload()
        self._tasks.append(asyncio.create_task(self._watch(), name="relay-watch"))
        self._tasks.append(asyncio.create_task(self._lease_ticks(), name="relay-leases"))
        if self._shared:
            self._tasks.append(asyncio.create_task(self._listen(), name="relay-wakeup"))
            await self._rebalance_everywhere()  # joined: an instance over its new share gives links up now

    def _reap(self) -> None:
        """Release at once the leases of instances of this host that died (restarted after a crash, the
        relay resumes now rather than after the dead process's leases expire)."""
        for instance_id in live_instances(self.member.engine, now=time.time()):
            if dead_here(instance_id):
                logger.info("instance %s on this host is gone: taking its leases over now", instance_id)
                leave(self.member.engine, instance_id)

    @property
    def _shared(self) -> bool:
        """Whether other instances may share the database (PostgreSQL), and hear notifications."""
        return self.context.state.db.engine.dialect.name == "postgresql"

    async def _rebalance_everywhere(self) -> None:
        with contextlib.suppress(Exception):  # a hint: without it, the next tick rebalances
            await asyncio.to_thread(wakeup.publish, self.context.state.db.engine, [REBALANCE])

    async def stop(self) -> None:
        """Stop every worker, then release every lease at once: the other instances take the links over now."""
        tasks = [task for _, task, _ in self._workers.values()] + self._tasks
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._tasks.clear()
        if self._stepping is not None:  # a step cut short by the cancel: let it finish before leaving
            with contextlib.suppress(Exception):
                await self._stepping
        async with self._reloading:
            try:
                await asyncio.to_thread(self.member.leave)
            except Exception as error:
                if not database_unavailable(error):
                    raise
                logger.warning("could not release %d lease(s), the database is unavailable: they expire within %g s",
                               len(self.member.held), self.context.settings.cluster.lease)
                return
        if self._shared:
            await self._rebalance_everywhere()  # left: the others take the links over now, not at their tick

    def worker(self, user: str) -> LinkWorker | None:
        entry = self._workers.get(user)
        return entry[0] if entry else None

    async def reload(self) -> None:
        """Renew and rebalance the leases; start workers for links newly held, restart changed ones, stop the
        ones of links removed or no longer held."""
        state = self.context.state
        async with self._reloading:
            links = {link.user: link for link in await state.call(state.db.links)}
            self._links = links
            self._calendars = await state.call(state.db.all_link_calendars)
            for user in list(self._workers):
                worker, task, updated_at = self._workers[user]
                if user not in links:
                    await self._stop_worker(user, "unlinked")
                    # The worker may have recorded an outcome after the link was deleted: drop it too.
                    await state.call(state.db.delete_link, user)
                elif links[user].updated_at not in (updated_at, worker.link.updated_at):
                    await self._stop_worker(user, "link changed")
                elif task.done() and worker.fenced_off:
                    self._workers.pop(user)  # restarted below if the lease is still held (renewed late)
            loop = asyncio.get_running_loop()

            def before_release(user: str) -> None:  # in step's thread: stop the worker on the loop, then release
                asyncio.run_coroutine_threadsafe(self._stop_worker(user, "handed over"), loop).result()

            # Shielded: a cancelled reload (at shutdown) lets the step finish, so stop() never leaves beside it.
            self._stepping = asyncio.ensure_future(
                asyncio.to_thread(self.member.step, links, now=time.time(), before_release=before_release)
            )
            changes = await asyncio.shield(self._stepping)
            for user in changes.lost:
                await self._stop_worker(user, "lease lost")
            if changes.lost and self._shared:
                await self._rebalance_everywhere()  # links given up: let an instance under its share take them
            for user, link in links.items():
                guard = self.member.guard(user)
                if user in self._workers or guard is None or not guard.valid():
                    continue
                calendars = await state.call(state.db.link_calendars, user)
                if not calendars:  # unlinked since the links were read: the next reload stops it
                    continue
                worker = LinkWorker(link, calendars, self.context, self._import_slots, guard)
                task = asyncio.create_task(worker.run(), name=f"relay-{user}")
                self._workers[user] = (worker, task, link.updated_at)
                logger.info("relay for %s started (%s, %d calendars, lease token %d)", user, link.mode,
                            len(calendars), guard.token)

    async def _stop_worker(self, user: str, why: str) -> None:
        entry = self._workers.pop(user, None)
        if entry is None:
            return
        task = entry[1]
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # the worker had failed already; stopping it must not fail the reload
            logger.exception("relay for %s had failed", user)
        logger.info("relay for %s stopped (%s)", user, why)

    async def _lease_ticks(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self.reload()
            except Exception as error:  # keep ticking: the leases expire if the database stays away
                if database_unavailable(error):
                    outage.down(error)  # logged once per outage
                else:
                    logger.exception("relay lease tick")

    async def _listen(self) -> None:
        """Notifications of CRM writes taken by any instance: wake the worker if the link is held here.

        A rescan (``Wake(None)``, after every reconnection) needs nothing: the outbox, polled every second by
        :meth:`_watch`, already catches whatever a lost notification would have said."""
        url = self.context.state.db.engine.url
        while True:
            try:
                async with wakeup.listen(url, poll_interval=3600) as wakes:
                    async for wake in wakes:
                        if wake.link_key == REBALANCE:
                            self.link_changed(REBALANCE)
                        elif wake.link_key is not None and (worker := self.worker(wake.link_key)) is not None:
                            worker.wake()
            except Exception:  # never end the listener: the outbox poll covers the gap
                logger.exception("wake-up listener")
                await asyncio.sleep(1.0)

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
        link = worker.link if worker is not None else self._links.get(user)
        own = [user] if "@" in user else []
        return own + ([f"mailto:{link.apple_id}"] if link is not None else [])

    def freshness(self, user: str) -> Mapping[str, SourceFreshness]:
        """How recent each mirror of ``user`` is: from the worker if this instance relays the user, else as the
        relaying instance last recorded it (at most one lease tick old)."""
        worker = self.worker(user)
        link = worker.link if worker is not None else self._links.get(user)
        if link is None:
            return {}
        calendars = list(worker.calendars.values()) if worker is not None else self._calendars.get(user, [])
        reconnect = link.state != "connected"
        return {
            calendar.mirror_path: SourceFreshness(
                last_success=datetime.fromtimestamp(calendar.last_success_at, UTC)
                if calendar.last_success_at
                else None,
                stale=reconnect,
                error=link.last_error if reconnect else calendar.last_error,
            )
            for calendar in calendars
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
                for user in await state.call(state.db.take_sync_requests, list(self._workers)):
                    self.sync_now(user)
                # Relay work recorded by another process or instance (proxy.relay.outbox) wakes the link here.
                outbox_seen, users = await state.call(outbox.newest_ids, state.db.engine, outbox_seen)
                for user in users:
                    if (worker := self.worker(user)) is not None:
                        worker.wake()
                if unlinked := [user for user in users if user not in self._links]:
                    await state.call(outbox.drop_users, state.db.engine, unlinked)
            except Exception as error:  # keep watching whatever happened
                if not database_unavailable(error):  # an outage is logged once, by proxy.outage
                    logger.exception("relay watcher")
