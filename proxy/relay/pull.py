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
from typing import TYPE_CHECKING, Any

from proxy.model import MirrorRole, Origin
from proxy.relay import transforms
from proxy.relay.conflicts import winner
from proxy.relay.decide import (
    PullCursor,
    TokenState,
    delta_from_changes,
    delta_from_listing,
    next_cursor,
    pull_unchanged,
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
from proxy.upstream import InvalidSyncToken, RemoteObject, UpstreamError

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

    async def run(self, client: Upstream, gate: Gate) -> None:
        for calendar in list(self.w.calendars.values()):
            await self.calendar(client, gate, calendar)

    async def calendar(self, client: Upstream, gate: Gate, calendar: LinkCalendar) -> None:
        w = self.w
        db = w.state.db
        url = calendar.remote_url
        started = time.time()
        previous = PullCursor(calendar.ctag, calendar.sync_token, TokenState(calendar.token_state))
        try:
            ctag, token = await gate.call(client.calendar_state(url))
            if pull_unchanged(ctag, previous):
                await self._pulled(calendar, last_success_at=time.time(), last_attempt_at=started, last_error=None)
                return
            statuses = await w.state.call(db.items, w.user, url)
            refused = False
            try:
                use = calendar.sync_token if previous.token_state is TokenState.VALID else None
                changes = await gate.call(client.changes(url, use))
                token = changes.token
                delta = delta_from_changes(changes.changed, changes.deleted, changes.complete, statuses)
            except InvalidSyncToken:
                logger.info("%s refused the sync token of %s; comparing ETags instead", url, w.user)
                delta = delta_from_listing(await gate.call(client.listing(url)), statuses)
                refused = True
            progress = PullProgress(calendar.remote_name, len(delta.wanted))
            self.progress[url] = progress
            await self._report(url, progress)
            batch = max(1, w.context.settings.upstream.import_batch)
            chunks = [delta.wanted[i:i + batch] for i in range(0, len(delta.wanted), batch)] or [[]]
            two_way = w.two_way and calendar.role == MirrorRole.PRIMARY
            propagate = w.link.deletions == "propagate"
            for index, chunk in enumerate(chunks):
                fetched = await gate.call(client.fetch(url, chunk)) if chunk else {}
                progress.fetched += len(fetched)
                w.stats["fetched"] += len(fetched)
                # Parsing is CPU work: off the event loop, so CalDAV requests are answered meanwhile.
                remote = await asyncio.to_thread(remote_items, list(fetched.values()))
                last = index == len(chunks) - 1
                async with w.status_lock:  # a push waits at most one batch
                    rows = await w.state.call(db.items, w.user, url) if index else statuses
                    actions = plan_pull(remote, delta.deleted if last else [], rows, two_way, propagate)
                    if actions and len(chunks) == 1:
                        logger.info("pull of %s for %s: %s", calendar.remote_name, w.user, summary(actions))
                    await self._execute(actions, calendar, gate)
                progress.written += len(fetched)
                await self._report(url, progress)
            cursor = next_cursor(previous, ctag, token, refused, len(delta.wanted), progress.fetched)
            if progress.fetched < len(delta.wanted):
                # Not visible yet (iCloud's lag): the old token makes the server report them again.
                logger.info("%d of %d changed objects of %s not readable yet; will ask again",
                            len(delta.wanted) - progress.fetched, len(delta.wanted), url)
        except StopPass as stop:
            await self._pulled(calendar, last_attempt_at=started, last_error=waiting(stop.cause))
            raise
        except UpstreamError as error:
            await self._pulled(calendar, last_attempt_at=started, last_error=str(error))
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
        await self._pulled(
            calendar, ctag=cursor.ctag, sync_token=cursor.token, token_state=cursor.token_state.value,
            last_success_at=time.time(), last_attempt_at=started, last_error=None,
        )

    async def _report(self, url: str, progress: PullProgress) -> None:
        if progress.total:  # only pulls that fetch something: an unchanged calendar costs no write
            w = self.w
            await w.state.call(w.state.db.set_progress, w.user, url, progress.total, progress.fetched,
                               progress.written, progress.started)

    async def _pulled(self, calendar: LinkCalendar, **values: object) -> None:
        w = self.w
        await w.state.call(w.state.db.update_pull_state, w.user, calendar.remote_url, **values)
        current = w.calendars.get(calendar.remote_url, calendar)
        w.calendars[calendar.remote_url] = replace(current, **values)

    async def _execute(self, actions: list[PullAction], calendar: LinkCalendar, gate: Gate) -> None:
        """Mirror writes (imports and refreshes) go to storage as one batch; the rest one by one."""
        w = self.w
        writes = [(a.remote, a.status if isinstance(a, RefreshMirror) else None)
                  for a in actions if isinstance(a, Import | RefreshMirror)]
        if writes:
            await w.write_mirrors(writes, calendar)
            w.stats["imported"] += sum(1 for a in actions if isinstance(a, Import))
            w.stats["refreshed"] += sum(1 for a in actions if isinstance(a, RefreshMirror))
        rest = [a for a in actions if not isinstance(a, Import | RefreshMirror)]
        await execute(rest, self._one, gate)

    async def _one(self, action: PullAction) -> None:
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
            else:  # kept on the calrelay side (rule 8): remember that iCloud no longer has it
                await w.save(replace(status, remote_href=None, remote_etag=None, remote_hash=None))
        elif isinstance(action, Forget):
            await w.state.call(db.delete_item, w.user, action.status.calendar_url, action.status.uid)

    async def _apply_to_crm_checked(self, action: ApplyToCrm) -> None:
        """Two-way: an iCloud edit of a CRM appointment, unless the CRM changed it too and its edit is newer."""
        status = action.status
        local = await self.w.local_text(status)
        if local is None:
            return  # deleted in the CRM meanwhile: the next push deletes it from iCloud
        changed_in_crm = transforms.content_hash(local) != status.local_hash
        if changed_in_crm and winner(local, action.remote.text, True) is Origin.CRM:
            return  # both changed and the CRM's edit is newer: the next push overwrites iCloud's
        await self.w.apply_to_crm(RemoteObject(action.remote.href, action.remote.etag, action.remote.text), status,
                                  local)


def remote_items(objects: list[RemoteObject]) -> list[RemoteItem]:
    return [r for r in (remote_item(o) for o in objects) if r is not None]


def remote_item(obj: RemoteObject) -> RemoteItem | None:
    try:
        if not transforms.is_event_object(obj.text):
            return None
        return RemoteItem(transforms.object_uid(obj.text), obj.href, obj.etag, obj.text,
                          transforms.content_hash(obj.text))
    except ValueError as error:
        logger.warning("iCloud object %s not imported: %s", obj.href, error)
        return None


def mirror_status(user: str, calendar: LinkCalendar, remote: RemoteItem, href: str, etag: str, text: str) -> ItemStatus:
    return ItemStatus(user, calendar.remote_url, remote.uid, Origin.ICLOUD, calendar.mirror_path, href, etag,
                      transforms.content_hash(text), remote.href, remote.etag, remote.hash)
