"""Pull execution: ask iCloud what changed, fetch it in batches, plan each batch with
:func:`proxy.relay.plan.plan_pull`, and write it to the calrelay side.

A pull never holds up a push for long: the status lock is taken per batch only, so a CRM write made during
a 3,000-event import is pushed between two batches, and each batch re-reads the status the push may have
changed. What a refused sync token or an incomplete fetch means is decided in :mod:`proxy.relay.decide`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from proxy.audit import Decision
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
    NoteRemote,
    PullAction,
    RefreshMirror,
    RemoteDeleted,
    RemoteItem,
    plan_pull,
)
from proxy.relay.progress import import_report
from proxy.relay.push import execute, summary
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
            for index, chunk in enumerate(chunks):
                fetched = await gate.call(client.fetch(where, chunk)) if chunk else {}
                progress.fetched += len(fetched)
                w.stats["fetched"] += len(fetched)
                # Parsing is CPU work: off the event loop, so CalDAV requests are answered meanwhile.
                remote = await asyncio.to_thread(remote_items, list(fetched.values()))
                last = index == len(chunks) - 1
                async with w.status_lock:  # a push waits at most one batch
                    rows = await w.state.call(db.items, w.user, url) if index else statuses
                    remote = await asyncio.to_thread(self._in_window, remote, rows)  # expands rules: CPU work
                    actions = plan_pull(remote, delta.deleted if last else [], rows, two_way, propagate, remirror)
                    if actions and len(chunks) == 1:
                        logger.debug("pull of %s for %s: %s", calendar.remote_name, w.user, summary(actions))
                    await self._execute(actions, calendar, gate, remirror)
                progress.written += len(fetched)
                await self._report(url, progress)
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

    def _in_window(self, remote: list[RemoteItem], statuses: list[ItemStatus]) -> list[RemoteItem]:
        """New events outside the sync window are not imported; known ones are followed wherever they go."""
        known = {unquote(status.remote_href) for status in statuses if status.remote_href}
        start, end = self.w.window.bounds(datetime.now(UTC))
        settings = self.w.context.settings
        return [r for r in remote if unquote(r.href) in known
                or window.in_window(r.text, start, end, settings.limits, settings.storage.max_occurrences)]

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
                       remirror: bool = False) -> None:
        """Mirror writes (imports and refreshes) go to storage as one batch; the rest one by one."""
        w = self.w
        writes = [(a.remote, a.status if isinstance(a, RefreshMirror) else None)
                  for a in actions if isinstance(a, Import | RefreshMirror)]
        if writes:
            await w.write_mirrors(writes, calendar)
            w.stats["imported"] += sum(1 for a in actions if isinstance(a, Import))
            w.stats["refreshed"] += sum(1 for a in actions if isinstance(a, RefreshMirror))
            where = {"calendar": calendar.mirror_path, "icloud_calendar": calendar.remote_name}
            for action in actions:
                if isinstance(action, Import):
                    w.context.audit.record(Decision.IMPORTED, w.user, action.remote.uid, "new event in iCloud, blocks the time", **where)  # noqa: E501
                elif isinstance(action, RefreshMirror):
                    why = "written again under the calendar's changed availability policies" if remirror else "changed in iCloud"  # noqa: E501
                    w.context.audit.record(Decision.REFRESHED, w.user, action.remote.uid, why, **where)
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
        elif isinstance(action, RemoteDeleted):
            status = action.status
            if action.remove_mirror and status.local_path and status.local_href:
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

    async def _apply_to_crm_checked(self, action: ApplyToCrm) -> None:
        """Two-way: an iCloud edit of a CRM appointment, unless the CRM changed it too and its edit is newer."""
        status = action.status
        local = await self.w.local_text(status)
        if local is None:
            return  # deleted in the CRM meanwhile: the next push deletes it from iCloud
        audit = self.w.context.audit
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


def remote_items(objects: list[RemoteObject]) -> list[RemoteItem]:
    return [r for r in (remote_item(o) for o in objects) if r is not None]


def remote_item(obj: RemoteObject) -> RemoteItem | None:
    try:
        facts = transforms.event_facts(obj.text)
        if facts is None:
            return None
        return RemoteItem(facts[0], obj.href, obj.etag, obj.text, facts[1])
    except ValueError as error:
        logger.warning("iCloud object %s not imported: %s", obj.href, error)
        return None


def kept_reason(status: ItemStatus) -> str:
    if status.origin == Origin.CRM:
        return "deleted in iCloud; a CRM appointment is never deleted by iCloud"
    return "deleted in iCloud; kept as a blocked slot (the link keeps iCloud deletions)"


def mirror_status(user: str, calendar: LinkCalendar, remote: RemoteItem, href: str, etag: str, text: str) -> ItemStatus:
    return ItemStatus(user, calendar.remote_url, remote.uid, Origin.ICLOUD, calendar.mirror_path, href, etag,
                      transforms.content_hash(text), remote.href, remote.etag, remote.hash)
