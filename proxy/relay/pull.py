"""Pull execution: ask iCloud what changed, fetch it in batches, plan each batch with
:func:`proxy.relay.plan.plan_pull`, and write it to the calrelay side.

A pull never holds up a push for long: the status lock is taken per batch only, so a CRM write made during
a 3,000-event import is pushed between two batches, and each batch re-reads the status the push may have
changed. What a refused sync token or an incomplete fetch means is decided in :mod:`proxy.relay.decide`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from icalendar import Calendar

from proxy.audit import Decision
from proxy.config import Settings
from proxy.model import MirrorRole, Origin
from proxy.relay import locate, transforms, window
from proxy.relay.conflicts import winner
from proxy.relay.decide import (
    PullCursor,
    TokenState,
    delta_from_changes,
    delta_from_listing,
    next_cursor,
    pull_unchanged,
    remirror_delta,
)
from proxy.relay.gate import Gate, StopPass, waiting
from proxy.relay.plan import (
    ApplyToCrm,
    Forget,
    Import,
    Note,
    NoteRemote,
    PullAction,
    RefreshMirror,
    RemoteDeleted,
    RemoteItem,
    deleted_by_calrelay,
    plan_pull,
)
from proxy.relay.progress import import_report
from proxy.relay.push import execute, kept_reason, summary
from proxy.relay.sides import Upstream
from proxy.state import ItemStatus, LinkCalendar
from proxy.upstream import InvalidSyncToken, NotFound, RemoteObject, UpstreamError

if TYPE_CHECKING:
    from proxy.relay.worker import LinkWorker

logger = logging.getLogger(__name__)

#: A pull with at least this many objects to fetch is logged as an import, with its end, count and duration.
IMPORT_LOG_THRESHOLD = 50


@dataclass
class PullProgress:
    """A running pull of one calendar: objects fetched and written of the total."""

    calendar: str
    total: int
    started: float = field(default_factory=time.time)
    fetched: int = 0
    written: int = 0

    def report(self) -> dict[str, Any]:
        return {"calendar": self.calendar,
                **import_report(self.total, self.fetched, self.written, self.started, time.time())}


class PullExecutor:
    def __init__(self, worker: LinkWorker) -> None:
        self.w = worker
        self.progress: dict[str, PullProgress] = {}  # remote URL -> the pull running now
        self._full_pulls: dict[str, float] = {}  # calendar URL -> wall time of its last full listing

    async def run(self, client: Upstream, gate: Gate) -> None:
        located = await self._locate(client, gate)
        for calendar in list(self.w.calendars.values()):
            if calendar.remote_url in located and located[calendar.remote_url] is None:
                await self._missing(calendar)
                continue
            await self.calendar(client, gate, calendar)

    async def _locate(self, client: Upstream, gate: Gate) -> dict[str, str | None]:
        """Where the linked calendars are now (cached discovery, proxy.relay.locate); {} if unknown."""
        locator = self.w.locator
        if locator is None:
            return {}
        try:
            return await locator.locate(client, gate, list(self.w.calendars))  # type: ignore[arg-type]
        except StopPass:
            raise
        except UpstreamError as error:  # pull from the stored URLs; the next pass asks again
            logger.warning("could not discover the iCloud account of %s: %s", self.w.user, error)
            return {}

    async def _missing(self, calendar: LinkCalendar) -> None:
        message = locate.missing_message(calendar.remote_name)
        if calendar.last_error != message:
            logger.warning("%s: %s", self.w.user, message)
        await self._pulled(calendar, last_attempt_at=time.time(), last_error=message)
        self.w.context.metrics.pulled("failed")

    async def calendar(self, client: Upstream, gate: Gate, calendar: LinkCalendar) -> None:
        w = self.w
        db = w.state.db
        url = calendar.remote_url  # the calendar as linked (the status rows' key)
        where = w.locator.url(url) if w.locator is not None else url  # where it answers now
        started = time.time()
        previous = PullCursor(calendar.ctag, calendar.sync_token, TokenState(calendar.token_state))
        try:
            ctag, token = await gate.call(client.calendar_state(where))
            # Once a day the calendar is listed whole, changed or not: time brings events into the window.
            interval = w.context.settings.upstream.full_pull_interval
            full = window.full_pull_due(self._full_pulls.get(url), started, interval)
            # Changed availability policies: every mirrored event is written again under the new ones.
            remirror = previous.token_state is TokenState.REMIRROR
            if pull_unchanged(ctag, previous) and not full:
                await self._pulled(calendar, last_success_at=time.time(), last_attempt_at=started, last_error=None)
                w.context.metrics.pulled("unchanged")
                return
            statuses = await w.state.call(db.items, w.user, url)
            refused = False
            try:
                use = calendar.sync_token if previous.token_state is TokenState.VALID and not full else None
                changes = await gate.call(client.changes(where, use))
                token = changes.token
                delta = delta_from_changes(changes.changed, changes.deleted, changes.complete, statuses)
                if remirror:
                    delta = remirror_delta(delta, changes.changed, statuses)
            except InvalidSyncToken:
                logger.info("%s refused the sync token of %s; comparing ETags instead", url, w.user)
                listing = await gate.call(client.listing(where))
                delta = delta_from_listing(listing, statuses)
                if remirror:
                    delta = remirror_delta(delta, listing, statuses)
                # The token read with the ctag just before is new and not refused: the next pull uses it, so the
                # status does not say "refused" until iCloud next changes.
                refused = not token
            progress = PullProgress(calendar.remote_name, len(delta.wanted))
            self.progress[url] = progress
            await self._report(url, progress)
            batch = max(1, w.context.settings.upstream.import_batch)
            chunks = [delta.wanted[i:i + batch] for i in range(0, len(delta.wanted), batch)] or [[]]
            two_way = w.two_way and calendar.role == MirrorRole.PRIMARY
            propagate = w.link.deletions == "propagate"

            async def fetch(chunk: list[str]) -> tuple[dict[str, RemoteObject], RemoteBatch]:
                fetched = await gate.call(client.fetch(where, chunk)) if chunk else {}
                # Parsing is CPU work: off the event loop, so CalDAV requests are answered meanwhile.
                parsed = await asyncio.to_thread(
                    remote_items, list(fetched.values()), w.window.bounds(datetime.now(UTC)), w.context.settings)
                return fetched, parsed

            ahead = asyncio.ensure_future(fetch(chunks[0]))
            try:
                for index in range(len(chunks)):
                    fetched, parsed = await ahead
                    if index + 1 < len(chunks):
                        # The next batch is fetched and parsed while this one is written.
                        ahead = asyncio.ensure_future(fetch(chunks[index + 1]))
                    self._note_unreadable(parsed.unreadable, calendar)
                    await self._batch(calendar, gate, progress, fetched, parsed, index, len(chunks),
                                      delta.deleted, two_way, propagate, remirror)
            finally:
                if not ahead.done():
                    ahead.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await ahead  # a batch fetched ahead and not needed (the pass stopped): its outcome is moot
            cursor = next_cursor(previous, ctag, token, refused, len(delta.wanted), progress.fetched)
            if progress.fetched < len(delta.wanted):
                # Not visible yet (iCloud's lag): the old token makes the server report them again.
                logger.info("%d of %d changed objects of %s not readable yet; will ask again",
                            len(delta.wanted) - progress.fetched, len(delta.wanted), url)
        except StopPass as stop:
            await self._pulled(calendar, last_attempt_at=started, last_error=waiting(stop.cause))
            w.context.metrics.pulled("stopped")
            raise
        except UpstreamError as error:
            if isinstance(error, NotFound) and w.locator is not None:
                w.locator.forget(f"404 on {where}")  # moved or deleted: the next pass discovers again
            await self._pulled(calendar, last_attempt_at=started, last_error=str(error))
            w.context.metrics.pulled("failed")
            logger.warning("pull of %s for %s failed: %s", calendar.remote_name, w.user, error)
            gate.failed += 1
            return
        finally:
            if self.progress.pop(url, None) is not None and progress.total:
                await w.state.call(db.clear_progress, w.user, url)
        if progress.total >= IMPORT_LOG_THRESHOLD:
            elapsed = time.time() - progress.started
            logger.info("import of %s for %s done: %d events in %.1f s (%.0f/s)", calendar.remote_name, w.user,
                        progress.fetched, elapsed, progress.fetched / max(elapsed, 1e-6))
        if full:
            self._full_pulls[url] = started
        await self._pulled(
            calendar, ctag=cursor.ctag, sync_token=cursor.token, token_state=cursor.token_state.value,
            last_success_at=time.time(), last_attempt_at=started, last_error=None, keep_remirror=not remirror,
        )
        w.context.metrics.pulled("changed")

    async def _batch(self, calendar: LinkCalendar, gate: Gate, progress: PullProgress,
                     fetched: dict[str, RemoteObject], parsed: RemoteBatch, index: int,
                     count: int, deleted: list[str], two_way: bool,
                     propagate: bool, remirror: bool) -> None:
        """Plan and write batch ``index`` of ``count`` (its objects fetched and parsed)."""
        remote = parsed.items
        w = self.w
        db = w.state.db
        url = calendar.remote_url
        progress.fetched += len(fetched)
        w.stats["fetched"] += len(fetched)
        last = index == count - 1
        async with w.status_lock:  # a push waits at most one batch
            # Statuses are read again under the lock, never taken from before the listing: a push that ran
            # meanwhile created objects the listing shows, and without their statuses they would be taken for
            # iCloud's own events (imported as blocked time, and the appointment never updated again).
            if last:  # deletions are matched against every status
                rows = await w.state.call(db.items, w.user, url)
            else:  # the statuses this batch concerns, as the push may have left them
                hrefs = [href for r in remote for href in (r.href, unquote(r.href))]
                rows = await w.state.call(db.items_for, w.user, url, [r.uid for r in remote], hrefs)
            remote = self._in_window_or_known(remote, parsed.outside, rows, calendar)
            actions = plan_pull(remote, deleted if last else [], rows, two_way, propagate, remirror)
            if actions and count == 1:
                logger.debug("pull of %s for %s: %s", calendar.remote_name, w.user, summary(actions))
            await self._execute(actions, calendar, gate, remirror, parsed.calendars)
        progress.written += len(fetched)
        await self._report(url, progress)

    def _note_unreadable(self, unreadable: dict[str, str], calendar: LinkCalendar) -> None:
        w = self.w
        w.stats["not_imported"] += len(unreadable)
        for href, error in unreadable.items():  # no UID to name it by: the object's name stands in
            w.context.audit.record(Decision.NOT_IMPORTED, w.user, href.rstrip("/").rsplit("/", 1)[-1], f"iCloud's object {href} is not a readable event: {error}", calendar=calendar.mirror_path, icloud_calendar=calendar.remote_name)  # noqa: E501

    def _in_window_or_known(self, remote: list[RemoteItem], outside: set[str], statuses: list[ItemStatus],
                            calendar: LinkCalendar) -> list[RemoteItem]:
        """New events outside the sync window are not imported; known ones are followed wherever they go."""
        w = self.w
        known = {unquote(status.remote_href) for status in statuses if status.remote_href}
        kept = []
        for r in remote:
            if r.href not in outside or unquote(r.href) in known:
                kept.append(r)
            else:
                reason = (f"outside the sync window ({w.window.past_days} days back to {w.window.future_days} "
                          "days ahead): imported once it comes within")
                w.context.audit.record(Decision.SKIPPED_WINDOW, w.user, r.uid, reason, calendar=calendar.mirror_path,
                                       icloud_calendar=calendar.remote_name)
        return kept

    async def _report(self, url: str, progress: PullProgress) -> None:
        if progress.total:  # only pulls that fetch something: an unchanged calendar costs no write
            w = self.w
            await w.state.call(w.state.db.set_progress, w.user, url, progress.total, progress.fetched,
                               progress.written, progress.started)

    async def _pulled(self, calendar: LinkCalendar, keep_remirror: bool = False, **values: object) -> None:
        w = self.w
        await w.state.call(w.state.db.update_pull_state, w.user, calendar.remote_url, keep_remirror, **values)
        current = w.calendars.get(calendar.remote_url, calendar)
        w.calendars[calendar.remote_url] = replace(current, **values)

    async def _execute(self, actions: list[PullAction], calendar: LinkCalendar, gate: Gate,
                       remirror: bool, parsed: dict[str, Calendar]) -> None:
        """Mirror writes (imports and refreshes) go to storage as one batch; the rest one by one."""
        w = self.w
        writes = [(a.remote, a.status if isinstance(a, RefreshMirror) else None)
                  for a in actions if isinstance(a, Import | RefreshMirror)]
        if writes:
            failed = await w.write_mirrors(writes, calendar, parsed)
            where = {"calendar": calendar.mirror_path, "icloud_calendar": calendar.remote_name}
            for action in actions:
                if not isinstance(action, Import | RefreshMirror):
                    continue
                uid = action.remote.uid
                if uid in failed:
                    w.stats["not_imported"] += 1
                    w.context.audit.record(Decision.NOT_IMPORTED, w.user, uid, f"iCloud's event cannot be mirrored: {failed[uid]}", **where)  # noqa: E501
                elif isinstance(action, Import):
                    w.stats["imported"] += 1
                    w.context.audit.record(Decision.IMPORTED, w.user, uid, "new event in iCloud, blocks the time", **where)  # noqa: E501
                else:
                    w.stats["refreshed"] += 1
                    why = "written again under the calendar's changed availability policies" if remirror else "changed in iCloud"  # noqa: E501
                    w.context.audit.record(Decision.REFRESHED, w.user, uid, why, **where)
        rest = [a for a in actions if not isinstance(a, Import | RefreshMirror)]
        await execute(rest, lambda action: self._one(action, calendar), gate)

    async def _one(self, action: PullAction, calendar: LinkCalendar) -> None:
        w = self.w
        db = w.state.db
        if isinstance(action, ApplyToCrm):
            await self._apply_to_crm_checked(action)
        elif isinstance(action, NoteRemote):
            await w.save(replace(action.status, remote_href=action.remote.href, remote_etag=action.remote.etag,
                                 remote_hash=action.remote.hash))
            decision = Decision.NOT_APPLIED if action.note is Note.ONE_WAY else Decision.NOTED
            w.context.audit.record(decision, w.user, action.status.uid, NOTE_REASONS[action.note], calendar=action.status.local_path, icloud_calendar=calendar.remote_name)  # noqa: E501
        elif isinstance(action, RemoteDeleted):
            status = action.status
            if action.remove_mirror and status.local_path and status.local_href:
                w.check_lease()
                w.expect_own(status.local_path, [status.local_href])
                await w.store.delete_item(status.local_path, status.local_href)
                await w.state.call(db.delete_item, w.user, status.calendar_url, status.uid)
                w.context.audit.record(Decision.MIRROR_REMOVED, w.user, status.uid, "deleted in iCloud; this link propagates iCloud deletions", calendar=status.local_path, icloud_calendar=calendar.remote_name)  # noqa: E501
            else:  # kept on the calrelay side (rule 8): remember that iCloud no longer has it
                await w.save(replace(status, remote_href=None, remote_etag=None, remote_hash=None))
                w.stats["kept"] += 1
                w.context.audit.record(Decision.KEPT_DELETION, w.user, status.uid, kept_reason(status), calendar=status.local_path, icloud_calendar=calendar.remote_name)  # noqa: E501
        elif isinstance(action, Forget):
            await w.state.call(db.delete_item, w.user, action.status.calendar_url, action.status.uid)
            if deleted_by_calrelay(action.status):
                return  # the tombstone of calrelay's own deletion (audited then as deleted): nothing to say
            w.context.audit.record(Decision.FORGOTTEN, w.user, action.status.uid, "deleted in iCloud after its blocked slot was removed in calrelay: nothing left to do", icloud_calendar=calendar.remote_name)  # noqa: E501

    async def _apply_to_crm_checked(self, action: ApplyToCrm) -> None:
        """Two-way: an iCloud edit of a CRM appointment, unless the CRM changed it too and its edit is newer."""
        status = action.status
        local = await self.w.local_text(status)
        audit = self.w.context.audit
        if local is None:  # deleted in the CRM meanwhile: the next push deletes it from iCloud
            audit.record(Decision.CONFLICT, self.w.user, status.uid, "edited in iCloud, deleted in the CRM: the CRM's deletion stands", calendar=status.local_path, winner="crm")  # noqa: E501
            return
        changed_in_crm = transforms.content_hash(local) != status.local_hash
        if changed_in_crm and winner(local, action.remote.text, True) is Origin.CRM:
            # Both changed and the CRM's edit is newer: the next push overwrites iCloud's.
            audit.record(Decision.CONFLICT, self.w.user, status.uid, "changed in iCloud and in the CRM: the CRM's edit is newer and kept", calendar=status.local_path, winner="crm")  # noqa: E501
            return
        await self.w.apply_to_crm(RemoteObject(action.remote.href, action.remote.etag, action.remote.text), status,
                                  local)
        if changed_in_crm:  # the CRM changed it too, before iCloud did
            audit.record(Decision.CONFLICT, self.w.user, status.uid, "changed in the CRM and, later, in iCloud: iCloud's edit kept", calendar=status.local_path, winner="icloud")  # noqa: E501
        else:
            audit.record(Decision.APPLIED, self.w.user, status.uid, "edited in iCloud: the CRM appointment updated (two-way)", calendar=status.local_path)  # noqa: E501


#: Why a change in iCloud was only recorded (the reason in the audit trail).
NOTE_REASONS = {
    Note.HOUSEKEEPING: "iCloud changed only its housekeeping (ETag, DTSTAMP, X-APPLE-*): nothing to apply",
    Note.MOVED: "same event at a new place in iCloud: nothing to apply",
    Note.ONE_WAY: "edited in iCloud; this link is one-way, so the CRM appointment keeps its version "
                  "(iCloud's copy is overwritten when the CRM next changes it)",
}


@dataclass
class RemoteBatch:
    """A batch of fetched objects, each parsed once (a pull reads thousands)."""

    items: list[RemoteItem]
    #: hrefs of the events outside the sync window
    outside: set[str]
    #: href -> why, for the objects that cannot be read
    unreadable: dict[str, str]
    #: href -> the parsed object, which the mirror write turns into the blocked slot (so it is parsed no more)
    calendars: dict[str, Calendar]


def remote_items(objects: list[RemoteObject], bounds: tuple[datetime, datetime], settings: Settings) -> RemoteBatch:
    """The fetched objects that are events, those outside the sync window ``bounds`` and those that cannot be
    read. A rule the store would refuse is not expanded here (see :func:`proxy.relay.window.in_window`)."""
    batch = RemoteBatch([], set(), {}, {})
    for obj in objects:
        if obj.problem is not None:  # too large to read: skipped, and audited like an unreadable object
            batch.unreadable[obj.href] = obj.problem
            continue
        try:
            calendar = transforms.parse_event_object(obj.text)
            if calendar is None:
                continue
            inside = window.in_window(calendar, *bounds, settings.limits, settings.storage.max_occurrences)
            uid, digest = transforms.uid_and_hash(calendar)
        except ValueError as error:
            logger.warning("iCloud object %s not imported: %s", obj.href, error)
            batch.unreadable[obj.href] = str(error)
            continue
        batch.items.append(RemoteItem(uid, obj.href, obj.etag, obj.text, digest))
        batch.calendars[obj.href] = calendar
        if not inside:
            batch.outside.add(obj.href)
    return batch


def mirror_status(user: str, calendar: LinkCalendar, remote: RemoteItem, href: str, etag: str, mirror_hash: str
                  ) -> ItemStatus:
    return ItemStatus(user, calendar.remote_url, remote.uid, Origin.ICLOUD, calendar.mirror_path, href, etag,
                      mirror_hash, remote.href, remote.etag, remote.hash)
