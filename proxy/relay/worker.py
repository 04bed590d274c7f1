"""One link's relay: scheduling, with push execution in :mod:`proxy.relay.push` and pull execution in
:mod:`proxy.relay.pull`.

A :class:`LinkWorker` runs two loops over one upstream session: a push loop, woken by the storage change
signal (a CRM write reaches iCloud within moments), and a pull loop, woken by the poll timer (iCloud has no
push) and by explicit sync requests. They run independently, so a push is never queued behind a long pull:
the two only share the status lock, which a pull takes one batch at a time. Pulls of different users run
concurrently up to ``[upstream] max_imports``.

Failures are normal events. A throttled or failing upstream backs the whole link off (exponential, jittered,
never shorter than Retry-After); a 401 puts the link into *needs-reconnect*; either way the work stays
pending, with its reason, in the state database until it is done.

In a cluster a worker runs only while its instance holds the link's lease (:mod:`proxy.cluster.leases`):
every state write it makes is fenced by the lease's token, every iCloud request and calendar write first
checks the lease's guard, and every iCloud request spends from the Apple ID's budget shared by all instances
(:mod:`proxy.cluster.budget`). When the lease is lost the worker stops at once, writing nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from icalendar import Calendar

from plugins.scope import Change, ChangeAction
from proxy.audit import AuditLog
from proxy.cluster.budget import AccountBudget, Policy
from proxy.cluster.leases import LeaseGuard, LeaseLost
from proxy.config import Settings
from proxy.engine import Engine
from proxy.logs import pass_summary
from proxy.metrics import Metrics
from proxy.model import MirrorRole
from proxy.outage import RELAY_MAX_PAUSE, RELAY_MIN_PAUSE, database_unavailable
from proxy.relay import policies, transforms, window
from proxy.relay.backoff import Backoff
from proxy.relay.gate import Gate, StopPass
from proxy.relay.holds import AccountHolds, account_key
from proxy.relay.locate import LinkLocator
from proxy.relay.plan import LocalItem, RemoteItem
from proxy.relay.pull import PullExecutor, mirror_status
from proxy.relay.push import PushExecutor
from proxy.relay.sides import EngineStore, LocalStore, Upstream
from proxy.secretbox import SecretBox, SecretError
from proxy.state import AsyncState, ItemStatus, Link, LinkCalendar
from proxy.upstream import AuthenticationFailed, RemoteObject, Throttled, UpstreamError
from proxy.upstream.discovery import DiscoveryCache

logger = logging.getLogger(__name__)

ClientFactory = Callable[..., Any]  # (server_url, apple_id, password, timeout=) -> async context manager of Upstream


@dataclass(frozen=True)
class RelayContext:
    settings: Settings
    engine: Engine | None
    state: AsyncState
    box: SecretBox
    client_factory: ClientFactory
    audit: AuditLog
    metrics: Metrics = field(default_factory=Metrics)
    #: throttling holds shared by every link of one Apple ID
    holds: AccountHolds = field(default_factory=AccountHolds)
    #: discovery answers (15 minutes), shared with the link service of the same process
    discovery: DiscoveryCache = field(default_factory=DiscoveryCache)
    #: The calrelay side; by default the engine's collections.
    store: LocalStore | None = None

    @property
    def local_store(self) -> LocalStore:
        if self.store is not None:
            return self.store
        assert self.engine is not None
        return EngineStore(self.engine)


class Schedule:
    """When the next push and pull are due and how long a back-off holds both, in monotonic seconds.
    An event per direction only interrupts a wait; the due times decide what runs."""

    def __init__(self, shared_hold: Callable[[], float] = lambda: 0.0) -> None:
        self._shared_hold = shared_hold  # the account's hold, shared with its other links (throttling)
        self.push_due: float | None = 0.0  # None: only when the CRM writes
        self.pull_due = 0.0
        self.hold_until = 0.0
        self.push_event = asyncio.Event()
        self.pull_event = asyncio.Event()

    def wake(self, pull: bool) -> None:
        self.push_due = 0.0
        self.push_event.set()
        if pull:
            self.pull_due = 0.0
            self.hold_until = 0.0
            self.pull_event.set()

    def hold(self, until: float) -> None:
        self.hold_until = max(self.hold_until, until)

    async def wait(self, due: Callable[[], float | None], event: asyncio.Event) -> None:
        """Until ``due()`` has come and no back-off holds; ``event`` cuts the wait short to look again."""
        while True:
            now = time.monotonic()
            when = due()
            start = max(when if when is not None else float("inf"), self.hold_until, self._shared_hold())
            if start <= now:
                return
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(start - now, 3600))


@dataclass(frozen=True)
class Mirrored:
    """An iCloud object as its blocked slot: where it goes in the mirror, its text and content hash."""

    remote: RemoteItem
    href: str
    text: str
    hash: str


class LinkWorker:
    def __init__(
        self,
        link: Link,
        calendars: list[LinkCalendar],
        context: RelayContext,
        import_slots: asyncio.Semaphore | None = None,
        guard: LeaseGuard | None = None,
    ) -> None:
        self.link = link
        self.calendars = {c.remote_url: c for c in calendars}
        self.context = context
        self.store = context.local_store
        self.guard = guard  # None: not under a lease (a test driving the worker by hand)
        self.state = context.state.fenced_by(guard.link_key, guard.token) if guard is not None else context.state
        self.user = link.user
        self.two_way = link.mode == "two-way"
        self.policies = policies.from_json(link.policies)
        # Each linked calendar's availability policies: its own where it sets them, else the link's.
        chosen = policies.policy_set(link.policies)
        self.calendar_policies = {c.remote_url: chosen.for_calendar(c.remote_name) for c in calendars}
        self.calendar_names: dict[str, str] = {}  # booking calendar path -> display name ({calendar})
        upstream = context.settings.upstream
        self.window = window.SyncWindow(upstream.window_past_days, upstream.window_future_days)
        self._account = account_key(link.server_url, link.apple_id)
        self.backoff = Backoff(upstream.min_backoff, upstream.max_backoff)
        self.budget = AccountBudget(context.state.db.engine, link.apple_id,
                                    Policy(rate=upstream.account_rate, burst=upstream.account_burst,
                                           backoff_min=upstream.min_backoff, backoff_max=upstream.max_backoff))
        self._db_backoff = Backoff(RELAY_MIN_PAUSE, RELAY_MAX_PAUSE)  # while the database is unavailable
        self.schedule = Schedule(lambda: context.holds.until(self._account))
        self.status_lock = asyncio.Lock()  # a push pass, or one batch of a pull
        self._limit = asyncio.Semaphore(upstream.max_concurrency)
        self._import_slots = import_slots or asyncio.Semaphore(max(1, upstream.max_imports))
        self._own: Counter[tuple[str, str]] = Counter()  # (collection, href) written by this worker, not yet seen
        self.locator: LinkLocator | None = None  # set once the password is decrypted (run)
        self.pusher = PushExecutor(self)
        self.puller = PullExecutor(self)
        self.fenced_off = False  # stopped because the lease was lost
        self.passes = 0  # completed pull passes (every linked calendar pulled once)
        self.push_passes = 0
        #: Running totals for the status report and the benchmarks: what crossed the wire and was written.
        self.stats = {"pushed": 0, "deleted": 0, "fetched": 0, "imported": 0, "refreshed": 0, "applied": 0,
                      "kept": 0, "not_imported": 0}

    @property
    def owner_addresses(self) -> tuple[str, ...]:
        """The iCloud account's own calendar-user addresses (its Apple ID)."""
        return (self.link.apple_id,)

    @property
    def backing_off(self) -> bool:
        """Whether a pause after upstream failures holds the link's work right now."""
        return self.schedule.hold_until > time.monotonic()

    @property
    def primary(self) -> LinkCalendar:
        return next(c for c in self.calendars.values() if c.role == MirrorRole.PRIMARY)

    @property
    def progress(self) -> list[dict[str, Any]]:
        """The pulls running now: fetched/written of total, rate and time left."""
        return [p.report() for p in list(self.puller.progress.values())]

    # -- wake-ups -----------------------------------------------------------------------------------------

    def wake(self, pull: bool = False) -> None:
        """A CRM change (push soon) or, with ``pull``, a request to sync now, even while backing off."""
        self.schedule.wake(pull)

    def on_change(self, change: Change) -> None:
        """A storage change of this user: push soon, unless it is the echo of this worker's own write."""
        key = (change.path.strip("/"), change.href or "")
        if change.action in (ChangeAction.ITEM_PUT, ChangeAction.ITEM_DELETE) and self._own[key] > 0:
            self._own[key] -= 1
            if not self._own[key]:
                del self._own[key]
            return
        self.wake()

    def expect_own(self, path: str, hrefs: Sequence[str]) -> None:
        """The next change of each (``path``, href) is this worker's own write: it must not wake the push."""
        for href in hrefs:
            self._own[(path.strip("/"), href)] += 1

    def check_lease(self) -> None:
        """Raise :class:`LeaseLost` unless this instance still certainly holds the link (before iCloud requests
        and calendar writes, which the database's fence does not cover)."""
        if self.guard is not None:
            self.guard.check()

    async def _before_request(self) -> None:
        await self.budget.spend(self.check_lease)

    def _gate(self) -> Gate:
        return Gate(self._limit, self._before_request)

    # -- the loops ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until cancelled; returns early, having written nothing more, once the lease is lost."""
        try:
            await self._run()
        except* LeaseLost:
            self.fenced_off = True
            logger.warning("relay for %s stopped: this instance no longer holds the link's lease", self.user)

    async def _run(self) -> None:
        try:
            password = self.context.box.decrypt(self.link.secret)
        except SecretError as error:
            await self._set_state("error", str(error))
            return
        self.locator = LinkLocator(self.context.discovery, self.link.server_url, self.link.apple_id, password,
                                   since=self.link.updated_at)
        async with self.context.client_factory(
            self.link.server_url, self.link.apple_id, password, timeout=self.context.settings.upstream.timeout
        ) as client:
            client.use_home(self.primary.remote_url)  # everything after discovery goes to the home's host
            async with asyncio.TaskGroup() as loops:  # one loop failing (a lost lease) stops the other
                loops.create_task(self._push_loop(client))
                loops.create_task(self._pull_loop(client))

    async def _push_loop(self, client: Upstream) -> None:
        schedule = self.schedule
        while True:
            await schedule.wait(lambda: schedule.push_due, schedule.push_event)
            schedule.push_due = None
            gate = self._gate()
            ok = await self._guarded(self.push_pass(client, gate))
            if ok and gate.failed:  # requests failed on their own: retry soon, backing off
                retry = time.monotonic() + self.backoff.next_delay(None, random.random)
                schedule.push_due = min(schedule.push_due if schedule.push_due is not None else retry, retry)
            elif not ok:
                schedule.push_due = 0.0  # whatever was not pushed is tried again when the pause ends

    async def _pull_loop(self, client: Upstream) -> None:
        schedule = self.schedule
        while True:
            await schedule.wait(lambda: schedule.pull_due, schedule.pull_event)
            schedule.pull_due = time.monotonic() + self.context.settings.upstream.poll_interval
            gate = self._gate()
            async with self._import_slots:
                ok = await self._guarded(self.pull_pass(client, gate))
            if ok and gate.failed:
                schedule.pull_due = min(schedule.pull_due,
                                        time.monotonic() + self.backoff.next_delay(None, random.random))
            elif not ok:
                schedule.pull_due = 0.0

    async def _guarded(self, work: Awaitable[None]) -> bool:
        """Run one pass; False if it stopped early (the link then backs off)."""
        try:
            await work
        except LeaseLost:
            raise  # not a failure to retry: the worker stops
        except StopPass as stop:
            await self._stopped(stop.cause)
            return False
        except Exception as error:
            if lease_lost(error):  # refused inside a batch of concurrent actions
                raise LeaseLost(self.user, self.guard.token if self.guard else 0) from error
            if database_unavailable(error):  # an outage (logged once by proxy.outage): pause, resume
                delay = self._db_backoff.next_delay(None, random.random)
            else:  # a bug must not end the link's relay: log it and try again later
                logger.exception("relay pass for %s failed", self.user)
                delay = self.backoff.next_delay(None, random.random)
            self.schedule.hold(time.monotonic() + delay)
            return False
        self._db_backoff.succeeded()
        return True

    async def push_pass(self, client: Upstream, gate: Gate) -> None:
        before = dict(self.stats)
        async with self.status_lock:
            await self.pusher.run(client, gate)
        await self._passed(gate, before)
        self.push_passes += 1

    async def pull_pass(self, client: Upstream, gate: Gate) -> None:
        before = dict(self.stats)
        await self.puller.run(client, gate)
        await self._passed(gate, before)
        self.passes += 1

    async def _passed(self, gate: Gate, before: dict[str, int]) -> None:
        if not gate.failed:
            self.backoff.succeeded()
            await self.budget.succeeded()
        if self.link.state != "connected":
            await self._set_state("connected")
        if self.link.last_error and not gate.failed:
            # A clean pass: the pause or failure reported ("retrying in 34 s") is over; stop showing it.
            await self.state.call(self.state.db.clear_link_error, self.user)
            self.link = replace(self.link, last_error=None, last_error_at=None)
        if summary := pass_summary(before, self.stats):
            logger.info("relay pass for %s: %s", self.user, summary)

    async def _stopped(self, cause: UpstreamError) -> None:
        if isinstance(cause, AuthenticationFailed):
            message = (
                "iCloud refused the stored credentials (app-specific password revoked or changed): "
                "link the account again with a new app-specific password"
            )
            await self._set_state("needs-reconnect", message)
            if self.locator is not None:
                self.locator.forget("credentials refused")
            delay = self.context.settings.upstream.max_backoff
        else:
            retry_after = cause.retry_after if isinstance(cause, Throttled) else None
            delay = self.backoff.next_delay(retry_after, random.random)
            if isinstance(cause, Throttled):  # every instance holds off this Apple ID, longer than Retry-After
                delay = max(delay, await self.budget.throttled(retry_after) - time.time())
            await self._set_state("connected", f"{cause} (retrying in {delay:.0f} s)")
        logger.warning("relay for %s paused %.1f s: %s", self.user, delay, cause)
        self.schedule.hold(time.monotonic() + delay)
        if isinstance(cause, Throttled):
            self.context.holds.hold(self._account, self.schedule.hold_until)

    async def _set_state(self, state: str, error: str | None = None) -> None:
        updated_at = await self.state.call(self.state.db.set_link_state, self.user, state, error)
        # The supervisor restarts a worker whose link changed; its own state write is no such change.
        self.link = replace(self.link, state=state, last_error=error or self.link.last_error, updated_at=updated_at)

    # -- writes to the calrelay side, shared by push and pull ---------------------------------------------

    async def write_mirrors(self, writes: Sequence[tuple[RemoteItem, ItemStatus | None]],
                            calendar: LinkCalendar, parsed: dict[str, Calendar] | None = None) -> dict[str, str]:
        """Import or refresh blocked slots in ``calendar``'s mirror: one storage call, one status call.
        ``parsed``: remote href -> the object already parsed, used up here. Returns UID -> why
        it was not written, for the objects that could not be mirrored."""
        failed: dict[str, str] = {}
        # CPU work, off the event loop.
        prepared = await asyncio.to_thread(self._mirror_texts, writes, calendar, parsed or {}, failed)
        if not prepared:
            return failed
        self.check_lease()
        path = calendar.mirror_path
        self.expect_own(path, [m.href for m in prepared])
        try:
            etags = await self.store.put_items(path, [(m.href, m.text) for m in prepared])
        except ValueError:  # one object storage refuses: write them one by one so the others land
            etags = []
            for m in prepared:
                try:
                    etags.append(await self.store.put_item(path, m.href, m.text))
                except ValueError as error:
                    logger.warning("iCloud object %s not imported: %s", m.remote.href, error)
                    failed[m.remote.uid] = str(error)
                    etags.append("")
        await self.state.call(self.state.db.save_items, [
            mirror_status(self.user, calendar, m.remote, m.href, etag, m.hash)
            for m, etag in zip(prepared, etags, strict=True) if etag])
        return failed

    def _mirror_texts(self, writes: Sequence[tuple[RemoteItem, ItemStatus | None]], calendar: LinkCalendar,
                      parsed: dict[str, Calendar], failed: dict[str, str]) -> list[Mirrored]:
        """The mirror of each write that can be mirrored; the others go to ``failed``."""
        prepared = []
        chosen = self.calendar_policies.get(calendar.remote_url, self.policies)
        for remote, status in writes:
            try:
                # A parsed object becomes its mirror, so it serves once.
                source = parsed.pop(remote.href, None)
                text, digest = transforms.mirror_of(remote.text if source is None else source,
                                                    self.owner_addresses, chosen)
            except ValueError as error:
                logger.warning("iCloud object %s not imported: %s", remote.href, error)
                failed[remote.uid] = str(error)
                continue
            href = status.local_href if status and status.local_href else transforms.remote_name(remote.uid)
            prepared.append(Mirrored(remote, href, text, digest))
        return prepared

    async def apply_to_crm(self, current: RemoteObject, status: ItemStatus, local: str) -> None:
        """Merge iCloud's version into the CRM appointment ``local``, stored where ``status`` says."""
        assert status.local_path is not None and status.local_href is not None
        merged = transforms.merge_icloud_edit(local, current.text, self.policies)
        self.check_lease()
        self.expect_own(status.local_path, [status.local_href])
        etag = await self.store.put_item(status.local_path, status.local_href, merged)
        await self.save(replace(
            status, local_etag=etag, local_hash=transforms.content_hash(merged), remote_href=current.href,
            remote_etag=current.etag, remote_hash=transforms.content_hash(current.text),
        ))
        self.stats["applied"] += 1
        logger.info("applied an iCloud edit of %s to %s%s", status.uid, status.local_path, status.local_href)

    def outgoing(self, local: LocalItem) -> str:
        """An appointment as iCloud gets it, under the link's policies (attendees, privacy)."""
        return transforms.to_icloud(local.text, self.policies, self.calendar_names.get(local.path, ""))

    async def local_text(self, status: ItemStatus) -> str | None:
        if status.local_path is None or status.local_href is None:
            return None
        item = await self.store.read_item(status.local_path, status.local_href)
        return item.text if item is not None else None

    async def save(self, status: ItemStatus) -> None:
        await self.state.call(self.state.db.save_item, status)


def lease_lost(error: BaseException) -> bool:
    """Whether ``error`` is, or carries, a :class:`LeaseLost` (raised by one of several concurrent actions)."""
    if isinstance(error, LeaseLost):
        return True
    if isinstance(error, BaseExceptionGroup):
        return any(lease_lost(inner) for inner in error.exceptions)
    return error.__cause__ is not None and lease_lost(error.__cause__)
