"""One link's relay: reads both sides, plans with :mod:`proxy.relay.plan`, and carries the plan out.

A :class:`LinkWorker` is a single asyncio task, so the passes of one link never overlap: a pass reads the
calrelay side and the status, plans, executes with a bounded number of requests in flight, and records each
outcome in the status database as soon as it is known. Wake-ups come from the storage change signal (push
within moments of a CRM write), from the poll timer (iCloud has no push) and from explicit sync requests.

Failures are normal events. A throttled or failing upstream backs the whole link off (exponential, jittered,
never shorter than Retry-After); a 401 puts the link into *needs-reconnect*; either way the work stays
pending, with its reason, in the state database until it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from plugins.sqlstore import Stamp
from proxy.audit import AuditLog, Decision
from proxy.config import Settings
from proxy.engine import CalendarInfo, Engine
from proxy.logs import pass_summary
from proxy.metrics import Metrics
from proxy.model import CALENDAR_KIND_PROP, MIRROR_ROLE_PROP, CalendarKind, EventKind, MirrorRole, Origin
from proxy.outage import RELAY_MAX_PAUSE, RELAY_MIN_PAUSE, database_unavailable
from proxy.relay import outbox, policies, transforms, window
from proxy.relay.backoff import Backoff
from proxy.relay.conflicts import winner
from proxy.relay.holds import AccountHolds, account_key
from proxy.relay.plan import (
    ApplyToCrm,
    Create,
    Delete,
    Forget,
    Import,
    LocalItem,
    NoteRemote,
    PullAction,
    PushAction,
    RefreshMirror,
    Relocate,
    RemoteDeleted,
    RemoteItem,
    Update,
    action_name,
    action_uid,
    outdated,
    plan_pull,
    plan_push,
    vanished,
)
from proxy.secretbox import SecretBox, SecretError
from proxy.state import AsyncState, ItemStatus, Link, LinkCalendar
from proxy.upstream import (
    AuthenticationFailed,
    InvalidSyncToken,
    NotFound,
    PreconditionFailed,
    RemoteObject,
    Throttled,
    TransientError,
    UpstreamClient,
    UpstreamError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
ClientFactory = Callable[..., UpstreamClient]
#: Consecutive failed requests after which the upstream counts as down and the pass stops.
OUTAGE_STREAK = 5


class StopPass(Exception):
    """The upstream asked us to stop for now (throttled, failing, or credentials refused)."""

    def __init__(self, cause: UpstreamError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True)
class RelayContext:
    settings: Settings
    engine: Engine
    state: AsyncState
    box: SecretBox
    client_factory: ClientFactory
    audit: AuditLog
    metrics: Metrics = field(default_factory=Metrics)
    #: throttling holds shared by every link of one Apple ID
    holds: AccountHolds = field(default_factory=AccountHolds)


class LinkWorker:
    def __init__(self, link: Link, calendars: list[LinkCalendar], context: RelayContext) -> None:
        self.link = link
        self.calendars = {c.remote_url: c for c in calendars}
        self.context = context
        self.user = link.user
        self.two_way = link.mode == "two-way"
        self.policies = policies.from_json(link.policies)
        self._calendar_names: dict[str, str] = {}  # booking calendar path -> display name ({calendar})
        upstream = context.settings.upstream
        self.window = window.SyncWindow(upstream.window_past_days, upstream.window_future_days)
        self._full_pulls: dict[str, float] = {}  # calendar URL -> wall time of its last full listing
        self._account = account_key(link.server_url, link.apple_id)
        self.backoff = Backoff(upstream.min_backoff, upstream.max_backoff)
        self._db_backoff = Backoff(RELAY_MIN_PAUSE, RELAY_MAX_PAUSE)  # while the database is unavailable
        # Scheduling state, in monotonic seconds. ``_wake`` only interrupts a wait; these decide what is due.
        self._wake = asyncio.Event()
        self._push_due: float | None = 0.0  # a push pass is due then; None = only when the CRM writes
        self._pull_due = 0.0  # the next pull of the iCloud calendars
        self._hold_until = 0.0  # backing off: no upstream work before then
        self._failed_items = 0  # items that failed transiently in the current pass
        self._pull_failed = False  # a calendar's pull failed in the current pass
        self._transient_streak = 0  # consecutive transient failures: an outage, not a glitch
        self._limit = asyncio.Semaphore(upstream.max_concurrency)
        self._refused: dict[str, str] = {}  # uid -> local etag that iCloud refused for good (until it changes)
        self._stop_reason: StopPass | None = None
        #: path -> (file stamps, href -> parsed item) as of the last read: the next read parses only changes.
        self._snapshots: dict[str, tuple[dict[str, Stamp], dict[str, LocalItem | None]]] = {}
        self.passes = 0
        #: Running totals for the status report and the benchmarks: what crossed the wire and was written.
        self.stats = {"pushed": 0, "deleted": 0, "fetched": 0, "imported": 0, "refreshed": 0, "applied": 0,
                      "kept": 0}

    @property
    def owner_addresses(self) -> tuple[str, ...]:
        """The iCloud account's own calendar-user addresses (its Apple ID)."""
        return (self.link.apple_id,)

    @property
    def backing_off(self) -> bool:
        """Whether a pause after upstream failures holds the link's work right now."""
        return self._hold_until > time.monotonic()

    @property
    def primary(self) -> LinkCalendar:
        return next(c for c in self.calendars.values() if c.role == MirrorRole.PRIMARY)

    # -- scheduling ---------------------------------------------------------------------------------------

    def wake(self, pull: bool = False) -> None:
        """A CRM change (push soon) or, with ``pull``, a request to sync now, even while backing off."""
        self._push_due = 0.0
        if pull:
            self._pull_due = 0.0
            self._hold_until = 0.0
        self._wake.set()

    async def run(self) -> None:
        try:
            password = self.context.box.decrypt(self.link.secret)
        except SecretError as error:
            await self._set_state("error", str(error))
            return
        async with self.context.client_factory(
            self.link.server_url, self.link.apple_id, password, timeout=self.context.settings.upstream.timeout
        ) as client:
            client.use_home(self.primary.remote_url)  # everything after discovery goes to the home's host
            while True:
                await self._wait()
                try:
                    try:
                        await self.run_pass(client)
                    except StopPass as stop:
                        await self._stopped(stop.cause)
                except Exception as error:
                    if database_unavailable(error):  # an outage (logged once by proxy.outage): pause, resume
                        delay = self._db_backoff.next_delay(None, random.random)
                    else:  # a bug must not end the link's relay: log it and try again later
                        logger.exception("relay pass for %s failed", self.user)
                        delay = self.backoff.next_delay(None, random.random)
                    self._hold_until = time.monotonic() + delay
                    self._push_due = 0.0
                else:
                    self._db_backoff.succeeded()

    async def _wait(self) -> None:
        """Until a push or pull is due and no back-off holds it; CRM writes and sync requests cut it short."""
        while True:
            now = time.monotonic()
            due = min(self._pull_due, self._push_due if self._push_due is not None else float("inf"))
            start = max(due, self._hold_until, self.context.holds.until(self._account))
            if start <= now:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(start - now, 3600))

    async def _stopped(self, cause: UpstreamError) -> None:
        if isinstance(cause, AuthenticationFailed):
            message = (
                "iCloud refused the stored credentials (app-specific password revoked or changed): "
                "link the account again with a new app-specific password"
            )
            await self._set_state("needs-reconnect", message)
            delay = self.context.settings.upstream.max_backoff
        else:
            retry_after = cause.retry_after if isinstance(cause, Throttled) else None
            delay = self.backoff.next_delay(retry_after, random.random)
            await self._set_state("connected", f"{cause} (retrying in {delay:.0f} s)")
        logger.warning("relay for %s paused %.1f s: %s", self.user, delay, cause)
        self._hold_until = time.monotonic() + delay
        if isinstance(cause, Throttled):
            self.context.holds.hold(self._account, self._hold_until)
        self._push_due = 0.0  # whatever was not pushed is tried again when the pause ends

    async def _set_state(self, state: str, error: str | None = None) -> None:
        await self.context.state.call(self.context.state.db.set_link_state, self.user, state, error)
        self.link = replace(self.link, state=state, last_error=error or self.link.last_error)

    # -- a pass -------------------------------------------------------------------------------------------

    async def run_pass(self, client: UpstreamClient) -> None:
        """Push what the CRM changed, then pull if due. Changes arriving meanwhile make another pass due."""
        self._stop_reason = None
        self._failed_items = 0
        self._pull_failed = False
        self._transient_streak = 0
        self._push_due = None
        pull = self._pull_due <= time.monotonic()
        before = dict(self.stats)
        await self.push(client)
        if pull:
            self._pull_due = time.monotonic() + self.context.settings.upstream.poll_interval
            for calendar in list(self.calendars.values()):
                await self.pull(client, calendar)
        if self._failed_items or self._pull_failed:  # requests failed on their own: retry soon, backing off
            retry = time.monotonic() + self.backoff.next_delay(None, random.random)
            if self._failed_items:
                self._push_due = min(self._push_due if self._push_due is not None else float("inf"), retry)
            if self._pull_failed:
                self._pull_due = min(self._pull_due, retry)
        else:
            self.backoff.succeeded()
        if self.link.state != "connected":
            await self._set_state("connected")
        if self.link.last_error and not (self._failed_items or self._pull_failed):
            # A clean pass: the pause or failure reported ("retrying in 34 s") is over; stop showing it.
            await self.context.state.call(self.context.state.db.clear_link_error, self.user)
            self.link = replace(self.link, last_error=None, last_error_at=None)
        self.passes += 1
        if summary := pass_summary(before, self.stats):
            logger.info("relay pass for %s: %s", self.user, summary)

    async def _call(self, work: Awaitable[T]) -> T:
        """One upstream request, within the link's concurrency limit.

        Throttling, refused credentials, or a run of failures (an outage) stop the whole pass; a single
        failed request fails only its item, which is retried with the next pass.
        """
        if self._stop_reason is not None:
            work.close()  # type: ignore[attr-defined]
            raise self._stop_reason
        async with self._limit:
            if self._stop_reason is not None:
                work.close()  # type: ignore[attr-defined]
                raise self._stop_reason
            try:
                result = await work
            except (Throttled, AuthenticationFailed) as error:
                self._stop_reason = self._stop_reason or StopPass(error)
                raise self._stop_reason from error
            except TransientError as error:
                self._transient_streak += 1
                if self._transient_streak >= OUTAGE_STREAK:
                    self._stop_reason = self._stop_reason or StopPass(error)
                    raise self._stop_reason from error
                raise
            self._transient_streak = 0
            return result

    # -- the calrelay side ----------------------------------------------------------------------------------

    async def _local_side(self) -> tuple[dict[str, LocalItem], dict[str, LocalItem]]:
        """(appointments of the integrating booking calendars, items of the primary mirror) by UID."""
        engine = self.context.engine
        calendars = await engine.call(engine.list_calendars, self.user)
        default_kind = CalendarKind.parse(self.context.settings.storage.default_calendar_kind)
        chosen = self.link.booking_calendars
        appointments: dict[str, LocalItem] = {}
        mirror: dict[str, LocalItem] = {}
        for calendar in sorted(calendars, key=lambda c: c.path):
            if calendar.path == self.primary.mirror_path:
                mirror = {item.uid: item for item in await self._read(calendar)}
            elif _integrates(calendar, default_kind, chosen):
                name = calendar.props.get("D:displayname", "") or calendar.path.strip("/")
                self._calendar_names[calendar.path] = name
                for item in await self._read(calendar):
                    if item.kind is EventKind.APPOINTMENT:
                        appointments.setdefault(item.uid, item)  # a UID in two calendars: the first one wins
                    else:
                        self.context.audit.record(Decision.SKIPPED_BLOCKED, self.user, item.uid, "a blocked slot never leaves calrelay", calendar=calendar.path)  # noqa: E501
            elif not calendar.props.get(MIRROR_ROLE_PROP):
                reason = _not_synced_reason(calendar, default_kind)
                for item in await self._read(calendar):
                    self.context.audit.record(Decision.SKIPPED_SIMPLE, self.user, item.uid, reason, calendar=calendar.path)  # noqa: E501
        return appointments, mirror

    async def _read(self, calendar: CalendarInfo) -> list[LocalItem]:
        """The calendar's event objects. Only files that changed since the last pass are read and parsed."""
        engine = self.context.engine
        stamps, items = self._snapshots.get(calendar.path, ({}, {}))
        new_stamps, changed = await engine.call(engine.read_changed_items, calendar.path, stamps)
        items = {href: item for href, item in items.items() if href in new_stamps}
        for stored in changed:
            items[stored.href] = None
            try:
                if transforms.is_event_object(stored.text):
                    items[stored.href] = LocalItem(
                        transforms.object_uid(stored.text), calendar.path, stored.href, stored.etag, stored.text,
                        transforms.content_hash(stored.text), transforms.object_kind(stored.text),
                    )
            except ValueError as error:
                logger.warning("not relayed: %s%s: %s", calendar.path, stored.href, error)
        self._snapshots[calendar.path] = (new_stamps, items)
        return [item for item in items.values() if item is not None]

    # -- push ------------------------------------------------------------------------------------------------

    async def push(self, client: UpstreamClient) -> None:
        db = self.context.state.db
        primary = self.primary
        taken = await self.context.state.call(outbox.rows, db.engine, self.user)  # relay work recorded so far
        appointments, mirror = await self._local_side()
        statuses = await self.context.state.call(db.items, self.user, primary.remote_url)
        actions = plan_push(
            appointments, mirror, statuses, _path_of(primary.remote_url), transforms.remote_name, self.two_way
        )
        # Everything planned is pending until done; what iCloud refused for good keeps its reason there.
        waiting = [(action_uid(a), action_name(a), "queued") for a in actions if not isinstance(a, Relocate | Forget)]
        await self.context.state.call(db.replace_pending, self.user, waiting)
        actions = [a for a in actions if not self._still_refused(a)]
        if actions:
            logger.debug("push for %s: %s", self.user, _summary(actions))
        await self._execute(actions, lambda action: self._push_one(client, action))
        if taken:  # the pass completed: drop the rows whose item is now reconciled with iCloud
            places = {(s.local_path, s.local_href): s.uid for s in statuses if s.local_path and s.local_href}
            places |= {(i.path, i.href): i.uid for i in [*mirror.values(), *appointments.values()]}
            pending = {p.uid for p in await self.context.state.call(db.pending, self.user)}
            await self.context.state.call(outbox.remove, db.engine, outbox.reconciled(taken, places, pending))

    def _still_refused(self, action: PushAction) -> bool:
        local = getattr(action, "local", None)
        etag = local.etag if local is not None else "deleted"
        return self._refused.get(action_uid(action)) == etag

    async def _execute(self, actions: Iterable[T], run: Callable[[T], Awaitable[None]]) -> None:
        results = await asyncio.gather(*(run(action) for action in actions), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, StopPass):
                raise result
        if self._stop_reason is not None:
            raise self._stop_reason

    async def _push_one(self, client: UpstreamClient, action: PushAction) -> None:
        db = self.context.state.db
        uid = action_uid(action)
        try:
            if isinstance(action, Create):
                await self._create(client, action)
            elif isinstance(action, Update):
                await (
                    self._update_appointment(client, action)
                    if action.status.origin == Origin.CRM
                    else self._update_icloud_born(client, action)
                )
            elif isinstance(action, Delete):
                await self._delete(client, action)
            elif isinstance(action, Relocate):
                await self._save(_local_status(action.status, action.local))
            elif isinstance(action, Forget):
                await self.context.state.call(db.delete_item, self.user, action.status.calendar_url, uid)
        except StopPass as stop:
            await self.context.state.call(db.set_pending, self.user, uid, action_name(action), _waiting(stop.cause))
            self.context.audit.record(Decision.WAITING, self.user, uid, _waiting(stop.cause))
            raise
        except TransientError as error:
            self._failed_items += 1
            await self.context.state.call(db.set_pending, self.user, uid, action_name(action),
                                          f"will retry: iCloud failed ({error})")
            self.context.audit.record(Decision.WAITING, self.user, uid, "will retry: iCloud failed")
            return
        except UpstreamError as error:  # refused for good (4xx): retried only once the CRM changes the item
            local = getattr(action, "local", None)
            self._refused[uid] = local.etag if local is not None else "deleted"
            reason = f"refused by iCloud, will retry when the item changes: {error}"
            await self.context.state.call(db.set_pending, self.user, uid, action_name(action), reason)
            self.context.audit.record(Decision.WAITING, self.user, uid, reason)
            logger.warning("%s of %s for %s: %s", action_name(action), uid, self.user, reason)
            return
        except ValueError as error:  # the CRM's data cannot be turned into an iCloud event
            local = getattr(action, "local", None)
            self._refused[uid] = local.etag if local is not None else "deleted"
            await self.context.state.call(
                db.set_pending, self.user, uid, action_name(action), f"not relayed, fix the event: {error}"
            )
            self.context.audit.record(Decision.WAITING, self.user, uid, f"not relayed, fix the event: {error}")
            return
        self._refused.pop(uid, None)
        if isinstance(action, Create | Update):
            self.stats["pushed"] += 1
        elif isinstance(action, Delete):
            self.stats["deleted"] += 1
        await self.context.state.call(db.clear_pending, self.user, uid)

    async def _create(self, client: UpstreamClient, action: Create) -> None:
        text = self._outgoing(action.local)
        try:
            etag = await self._call(client.create(action.href, text))
        except PreconditionFailed:
            # Either calrelay created it before a crash, or iCloud holds this UID elsewhere (one UID per account).
            try:
                existing = await self._call(client.get(action.href))
            except NotFound:
                raise PreconditionFailed(
                    f"iCloud already has an event with UID {action.local.uid} in another calendar of this account",
                    412,
                ) from None
            if transforms.content_hash(existing.text) == transforms.content_hash(text):
                etag = existing.etag  # our earlier create: adopt it, do not write a second copy
            else:
                etag = await self._call(client.update(action.href, text, existing.etag))
        await self._save(
            ItemStatus(
                self.user,
                self.primary.remote_url,
                action.local.uid,
                Origin.CRM,
                action.local.path,
                action.local.href,
                action.local.etag,
                action.local.hash,
                action.href,
                etag,
                transforms.content_hash(text),
            )
        )
        self.context.audit.record(Decision.CREATED, self.user, action.local.uid, "new appointment in the CRM", calendar=action.local.path, icloud_calendar=self.primary.remote_name)  # noqa: E501

    def _outgoing(self, local: LocalItem) -> str:
        """An appointment as iCloud gets it, under the link's policies (attendees, privacy)."""
        return transforms.to_icloud(local.text, self.policies, self._calendar_names.get(local.path, ""))

    async def _update_appointment(self, client: UpstreamClient, action: Update) -> None:
        status, local = action.status, action.local
        assert status.remote_href is not None
        text = self._outgoing(local)
        try:
            # Read iCloud's copy first: what iCloud added by itself (the default alarm) must survive the PUT.
            text = transforms.keep_icloud_additions(text, (await self._call(client.get(status.remote_href))).text)
            etag = await self._call(client.update(status.remote_href, text, status.remote_etag or ""))
        except NotFound:  # deleted in iCloud, changed in the CRM since: the CRM's change brings it back
            etag = await self._call(client.create(status.remote_href, text))
        except PreconditionFailed:
            current = await self._call(client.get(status.remote_href))
            if transforms.content_hash(current.text) == transforms.content_hash(text):
                # Our own update, made just before a crash kept us from recording it: adopt it.
                await self._save(replace(_local_status(status, local), remote_etag=current.etag,
                                         remote_hash=transforms.content_hash(text)))
                self.context.audit.record(Decision.UPDATED, self.user, local.uid, "changed in the CRM", calendar=local.path, icloud_calendar=self.primary.remote_name)  # noqa: E501
                return
            changed_in_icloud = transforms.content_hash(current.text) != status.remote_hash
            if changed_in_icloud and winner(local.text, current.text, self.two_way) is Origin.ICLOUD:
                logger.warning(
                    "conflict on %s for %s: changed in the CRM and, later, in iCloud; iCloud's edit kept",
                    local.uid,
                    self.user,
                )
                self.context.audit.record(Decision.CONFLICT, self.user, local.uid, "changed in the CRM and, later, in iCloud: iCloud's edit kept", calendar=local.path, icloud_calendar=self.primary.remote_name, winner="icloud")  # noqa: E501
                await self._apply_to_crm(current, _local_status(status, local), local.text)
                return
            if changed_in_icloud:
                logger.warning(
                    "conflict on %s for %s: changed in the CRM and in iCloud; the CRM's edit kept (%s)",
                    local.uid,
                    self.user,
                    "one-way" if not self.two_way else "it is newer",
                )
                self.context.audit.record(Decision.CONFLICT, self.user, local.uid, f"changed in the CRM and in iCloud: the CRM's edit kept ({'one-way link' if not self.two_way else 'it is newer'})", calendar=local.path, icloud_calendar=self.primary.remote_name, winner="crm")  # noqa: E501
            etag = await self._call(client.update(status.remote_href, text, current.etag))
        await self._save(
            replace(_local_status(status, local), remote_etag=etag, remote_hash=transforms.content_hash(text))
        )
        self.context.audit.record(Decision.UPDATED, self.user, local.uid, "changed in the CRM", calendar=local.path, icloud_calendar=self.primary.remote_name)  # noqa: E501

    async def _update_icloud_born(self, client: UpstreamClient, action: Update) -> None:
        """Two-way, rule 11: the CRM edited an iCloud-born event in the primary mirror."""
        status, local = action.status, action.local
        assert status.remote_href is not None
        current = await self._call(client.get(status.remote_href))
        if transforms.content_hash(current.text) != status.remote_hash:
            logger.warning(
                "conflict on %s for %s: an iCloud-born event changed in iCloud and in the CRM; iCloud's edit kept",
                local.uid,
                self.user,
            )
            self.context.audit.record(Decision.CONFLICT, self.user, local.uid, "an iCloud event changed in iCloud and in the CRM: iCloud's edit kept", calendar=local.path, icloud_calendar=self.primary.remote_name, winner="icloud")  # noqa: E501
            await self._write_mirror(
                RemoteItem(local.uid, current.href, current.etag, current.text, transforms.content_hash(current.text)),
                status,
            )
            return
        # Content from the CRM, people (attendees, organizer) from iCloud: the mirror has none of them.
        text = transforms.to_icloud(transforms.merge_icloud_edit(current.text, local.text))
        etag = await self._call(client.update(status.remote_href, text, current.etag))
        await self._save(
            replace(_local_status(status, local), remote_etag=etag, remote_hash=transforms.content_hash(text))
        )
        self.context.audit.record(Decision.UPDATED, self.user, local.uid, "the CRM edited an iCloud event (two-way)", calendar=local.path, icloud_calendar=self.primary.remote_name)  # noqa: E501

    async def _delete(self, client: UpstreamClient, action: Delete) -> None:
        status = action.status
        assert status.remote_href is not None
        try:
            await self._call(client.delete(status.remote_href, status.remote_etag))
        except NotFound:
            pass
        except PreconditionFailed:
            current = await self._call(client.get(status.remote_href))
            if status.origin == Origin.ICLOUD and transforms.content_hash(current.text) != status.remote_hash:
                # An iCloud-born event edited in iCloud after the CRM deleted its blocked slot: keep the event;
                # the next pull imports it again.
                logger.warning(
                    "conflict on %s for %s: deleted in the CRM, edited in iCloud; kept", status.uid, self.user
                )
                self.context.audit.record(Decision.CONFLICT, self.user, status.uid, "deleted in the CRM, edited in iCloud: iCloud's event kept", calendar=status.local_path, winner="icloud")  # noqa: E501
                await self.context.state.call(self.context.state.db.delete_item, self.user, status.calendar_url, status.uid)  # noqa: E501
                return
            await self._call(client.delete(status.remote_href, current.etag))
        await self.context.state.call(self.context.state.db.delete_item, self.user, status.calendar_url, status.uid)
        self.context.audit.record(Decision.DELETED, self.user, status.uid, "no longer an appointment in the CRM (deleted, blocked, or moved to a calendar that does not sync)", calendar=status.local_path)  # noqa: E501

    # -- pull --------------------------------------------------------------------------------------------------

    async def pull(self, client: UpstreamClient, calendar: LinkCalendar) -> None:
        db = self.context.state.db
        started = time.time()
        try:
            ctag, token = await self._call(client.calendar_state(calendar.remote_url))
            # Once a day the calendar is listed whole, changed or not: time brings events into the window.
            interval = self.context.settings.upstream.full_pull_interval
            full = window.full_pull_due(self._full_pulls.get(calendar.remote_url), started, interval)
            if ctag and ctag == calendar.ctag and calendar.token_state != "none" and not full:
                await self._pulled(calendar, last_success_at=started, last_attempt_at=started, last_error=None)
                self.context.metrics.pulled("unchanged")
                return
            statuses = await self.context.state.call(db.items, self.user, calendar.remote_url)
            token_state = "valid"
            try:
                use = calendar.sync_token if calendar.token_state == "valid" and not full else None
                changes = await self._call(client.changes(calendar.remote_url, use))
                token = changes.token
                if changes.complete:
                    wanted, deleted = outdated(changes.changed, statuses), vanished(changes.changed, statuses)
                else:
                    known = {s.remote_href: s.remote_etag for s in statuses}
                    wanted = [h for h, etag in changes.changed.items() if known.get(h) != etag]
                    deleted = sorted(changes.deleted)
            except InvalidSyncToken:
                logger.info("%s refused the sync token of %s; comparing ETags instead", calendar.remote_url, self.user)
                listing = await self._call(client.listing(calendar.remote_url))
                wanted, deleted = outdated(listing, statuses), vanished(listing, statuses)
                # The token read with the ctag just before is new and not refused: the next pull uses it, so the
                # status does not say "refused" until iCloud next changes.
                token_state = "valid" if token else "none"
            fetched = await self._call(client.fetch(calendar.remote_url, wanted)) if wanted else {}
            self.stats["fetched"] += len(fetched)
            if len(fetched) < len(wanted):
                # Not visible yet (iCloud's lag): keep the old token so the server reports them again.
                logger.info(
                    "%d of %d changed objects of %s not readable yet; will ask again",
                    len(wanted) - len(fetched),
                    len(wanted),
                    calendar.remote_url,
                )
                token, ctag = calendar.sync_token, calendar.ctag
            remote = [r for r in (_remote_item(o) for o in fetched.values()) if r is not None]
            remote = self._in_window(remote, statuses)
            actions = plan_pull(
                remote,
                deleted,
                statuses,
                self.two_way and calendar.role == MirrorRole.PRIMARY,
                self.link.deletions == "propagate",
            )
            if actions:
                logger.debug("pull of %s for %s: %s", calendar.remote_name, self.user, _summary(actions))
            await self._execute(actions, lambda action: self._pull_one(action, calendar))
        except StopPass as stop:
            await self._pulled(calendar, last_attempt_at=started, last_error=_waiting(stop.cause))
            self.context.metrics.pulled("stopped")
            raise
        except UpstreamError as error:
            await self._pulled(calendar, last_attempt_at=started, last_error=str(error))
            self.context.metrics.pulled("failed")
            logger.warning("pull of %s for %s failed: %s", calendar.remote_name, self.user, error)
            self._pull_failed = True
            return
        if full:
            self._full_pulls[calendar.remote_url] = started
        await self._pulled(
            calendar,
            ctag=ctag,
            sync_token=token,
            token_state=token_state,
            last_success_at=started,
            last_attempt_at=started,
            last_error=None,
        )
        self.context.metrics.pulled("changed")

    def _in_window(self, remote: list[RemoteItem], statuses: list[ItemStatus]) -> list[RemoteItem]:
        """New events outside the sync window are not imported; known ones are followed wherever they go."""
        known = {unquote(status.remote_href) for status in statuses if status.remote_href}
        start, end = self.window.bounds(datetime.now(UTC))
        return [r for r in remote if unquote(r.href) in known or window.in_window(r.text, start, end)]

    async def _pulled(self, calendar: LinkCalendar, **values: object) -> None:
        await self.context.state.call(self.context.state.db.update_pull_state, self.user, calendar.remote_url, **values)
        self.calendars[calendar.remote_url] = replace(calendar, **values)

    async def _pull_one(self, action: PullAction, calendar: LinkCalendar) -> None:
        db = self.context.state.db
        if isinstance(action, Import):
            await self._write_mirror(action.remote, None, calendar)
            self.stats["imported"] += 1
            self.context.audit.record(Decision.IMPORTED, self.user, action.remote.uid, "new event in iCloud, blocks the time", calendar=calendar.mirror_path, icloud_calendar=calendar.remote_name)  # noqa: E501
        elif isinstance(action, RefreshMirror):
            await self._write_mirror(action.remote, action.status, calendar)
            self.stats["refreshed"] += 1
            self.context.audit.record(Decision.REFRESHED, self.user, action.remote.uid, "changed in iCloud", calendar=calendar.mirror_path, icloud_calendar=calendar.remote_name)  # noqa: E501
        elif isinstance(action, ApplyToCrm):
            await self._apply_to_crm_checked(action)
        elif isinstance(action, NoteRemote):
            await self._save(
                replace(
                    action.status,
                    remote_href=action.remote.href,
                    remote_etag=action.remote.etag,
                    remote_hash=action.remote.hash,
                )
            )
        elif isinstance(action, RemoteDeleted):
            status = action.status
            if action.remove_mirror and status.local_path and status.local_href:
                await self.context.engine.call(self.context.engine.delete_item, status.local_path, status.local_href)
                await self.context.state.call(db.delete_item, self.user, status.calendar_url, status.uid)
                self.context.audit.record(Decision.MIRROR_REMOVED, self.user, status.uid, "deleted in iCloud; this link propagates iCloud deletions", calendar=status.local_path, icloud_calendar=calendar.remote_name)  # noqa: E501
            else:  # kept on the calrelay side (rule 8): remember that iCloud no longer has it
                await self._save(replace(status, remote_href=None, remote_etag=None, remote_hash=None))
                self.stats["kept"] += 1
                self.context.audit.record(Decision.KEPT_DELETION, self.user, status.uid, _kept_reason(status), calendar=status.local_path, icloud_calendar=calendar.remote_name)  # noqa: E501
        elif isinstance(action, Forget):
            await self.context.state.call(db.delete_item, self.user, action.status.calendar_url, action.status.uid)

    async def _write_mirror(
        self, remote: RemoteItem, status: ItemStatus | None, calendar: LinkCalendar | None = None
    ) -> None:
        calendar = calendar or self.primary
        text = transforms.to_mirror(remote.text, self.owner_addresses, self.policies)
        href = status.local_href if status and status.local_href else transforms.remote_name(remote.uid)
        engine = self.context.engine
        etag = await engine.call(engine.put_item, calendar.mirror_path, href, text)
        await self._save(
            ItemStatus(
                self.user,
                calendar.remote_url,
                remote.uid,
                Origin.ICLOUD,
                calendar.mirror_path,
                href,
                etag,
                transforms.content_hash(text),
                remote.href,
                remote.etag,
                remote.hash,
            )
        )

    async def _apply_to_crm_checked(self, action: ApplyToCrm) -> None:
        """Two-way: an iCloud edit of a CRM appointment, unless the CRM changed it too and its edit is newer."""
        status = action.status
        local = await self._local_text(status)
        if local is None:
            return  # deleted in the CRM meanwhile: the next push deletes it from iCloud
        if (
            transforms.content_hash(local) != status.local_hash
            and winner(local, action.remote.text, True) is Origin.CRM
        ):
            # Both changed and the CRM's edit is newer: the next push overwrites iCloud's.
            self.context.audit.record(Decision.CONFLICT, self.user, status.uid, "changed in iCloud and in the CRM: the CRM's edit is newer and kept", calendar=status.local_path, winner="crm")  # noqa: E501
            return
        await self._apply_to_crm(
            RemoteObject(action.remote.href, action.remote.etag, action.remote.text), status, local
        )
        if transforms.content_hash(local) != status.local_hash:  # the CRM changed it too, before iCloud did
            self.context.audit.record(Decision.CONFLICT, self.user, status.uid, "changed in the CRM and, later, in iCloud: iCloud's edit kept", calendar=status.local_path, winner="icloud")  # noqa: E501
        else:
            self.context.audit.record(Decision.APPLIED, self.user, status.uid, "edited in iCloud: the CRM appointment updated (two-way)", calendar=status.local_path)  # noqa: E501

    async def _apply_to_crm(self, current: RemoteObject, status: ItemStatus, local: str) -> None:
        """Merge iCloud's version into the CRM appointment ``local``, stored where ``status`` says."""
        assert status.local_path is not None and status.local_href is not None
        merged = transforms.merge_icloud_edit(local, current.text, self.policies)
        engine = self.context.engine
        etag = await engine.call(engine.put_item, status.local_path, status.local_href, merged)
        await self._save(
            replace(
                status,
                local_etag=etag,
                local_hash=transforms.content_hash(merged),
                remote_href=current.href,
                remote_etag=current.etag,
                remote_hash=transforms.content_hash(current.text),
            )
        )
        self.stats["applied"] += 1
        logger.info("applied an iCloud edit of %s to %s%s", status.uid, status.local_path, status.local_href)

    async def _local_text(self, status: ItemStatus) -> str | None:
        if status.local_path is None or status.local_href is None:
            return None
        engine = self.context.engine
        item = await engine.call(engine.read_item, status.local_path, status.local_href)
        return item.text if item is not None else None

    async def _save(self, status: ItemStatus) -> None:
        await self.context.state.call(self.context.state.db.save_item, status)


def _integrates(calendar: CalendarInfo, default_kind: CalendarKind, chosen: frozenset[str]) -> bool:
    if calendar.props.get(MIRROR_ROLE_PROP):
        return False
    try:
        kind = CalendarKind.parse(calendar.props.get(CALENDAR_KIND_PROP) or default_kind.value)
    except ValueError:
        return False
    return kind.integrates and (not chosen or calendar.path in chosen)


def _not_synced_reason(calendar: CalendarInfo, default_kind: CalendarKind) -> str:
    kind = calendar.props.get(CALENDAR_KIND_PROP) or default_kind.value
    if kind == CalendarKind.SIMPLE.value:
        return "in a Simple calendar, which never syncs to iCloud"
    return f"calendar {calendar.path} ({kind}) is not one of the calendars chosen for this link"


def _kept_reason(status: ItemStatus) -> str:
    if status.origin == Origin.CRM:
        return "deleted in iCloud; a CRM appointment is never deleted by iCloud"
    return "deleted in iCloud; kept as a blocked slot (the link keeps iCloud deletions)"


def _path_of(url: str) -> str:
    path = urlsplit(url).path
    return path if path.endswith("/") else path + "/"


def _local_status(status: ItemStatus, local: LocalItem) -> ItemStatus:
    return replace(status, local_path=local.path, local_href=local.href, local_etag=local.etag, local_hash=local.hash)


def _remote_item(obj: RemoteObject) -> RemoteItem | None:
    try:
        if not transforms.is_event_object(obj.text):
            return None
        return RemoteItem(
            transforms.object_uid(obj.text), obj.href, obj.etag, obj.text, transforms.content_hash(obj.text)
        )
    except ValueError as error:
        logger.warning("iCloud object %s not imported: %s", obj.href, error)
        return None


def _waiting(cause: UpstreamError) -> str:
    if isinstance(cause, AuthenticationFailed):
        return "waiting: iCloud refused the credentials; link the account again"
    if isinstance(cause, Throttled):
        return f"waiting: iCloud is throttling requests ({cause})"
    return f"waiting: iCloud unavailable ({cause})"


def _summary(actions: list[PushAction] | list[PullAction]) -> str:
    counts: dict[str, int] = {}
    for action in actions:
        counts[action_name(action)] = counts.get(action_name(action), 0) + 1
    return ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
