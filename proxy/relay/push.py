"""Push execution: read the CRM side, plan with :func:`proxy.relay.plan.plan_push`, carry the plan out on iCloud.

What an unexpected answer means (412 on create, update or delete, 404 on update) is decided by
:mod:`proxy.relay.decide`; this module only performs the requests and records each outcome as it is known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from plugins.sqlstore import Stamp
from proxy.audit import Decision
from proxy.engine import CalendarInfo
from proxy.model import CALENDAR_KIND_PROP, MIRROR_ROLE_PROP, CalendarKind, EventKind, Origin
from proxy.relay import outbox, transforms
from proxy.relay.conflicts import winner
from proxy.relay.decide import (
    AfterRefusedCreate,
    AfterRefusedDelete,
    AfterRefusedUpdate,
    IcloudBornEdit,
    after_missing_update,
    after_refused_create,
    after_refused_delete,
    after_refused_update,
    icloud_born_edit,
)
from proxy.relay.gate import Gate, StopPass, waiting
from proxy.relay.plan import (
    Create,
    Delete,
    Forget,
    Hold,
    Keep,
    LocalItem,
    PullAction,
    PushAction,
    Relocate,
    RemoteItem,
    Update,
    action_name,
    action_uid,
    plan_push,
    tombstone,
)
from proxy.relay.sides import Upstream
from proxy.state import ItemStatus
from proxy.upstream import NotFound, PreconditionFailed, RemoteObject, TransientError, UpstreamError

if TYPE_CHECKING:
    from proxy.relay.worker import LinkWorker

logger = logging.getLogger(__name__)

T = TypeVar("T")


class PushExecutor:
    def __init__(self, worker: LinkWorker) -> None:
        self.w = worker
        self._refused: dict[str, str] = {}  # uid -> local etag that iCloud refused for good (until it changes)
        #: path -> (file stamps, href -> parsed item) as of the last read: the next read parses only changes.
        self._snapshots: dict[str, tuple[dict[str, Stamp], dict[str, LocalItem | None]]] = {}

    # -- the calrelay side ----------------------------------------------------------------------------------

    async def local_side(self) -> tuple[dict[str, LocalItem], dict[str, LocalItem]]:
        """(appointments of the integrating booking calendars, items of the primary mirror) by UID."""
        w = self.w
        calendars = await w.store.list_calendars(w.user)
        default_kind = CalendarKind.parse(w.context.settings.storage.default_calendar_kind)
        chosen = w.link.booking_calendars
        appointments: dict[str, LocalItem] = {}
        mirror: dict[str, LocalItem] = {}
        for calendar in sorted(calendars, key=lambda c: c.path):
            if calendar.path == w.primary.mirror_path:
                mirror = {item.uid: item for item in await self._read(calendar)}
            elif integrates(calendar, default_kind, chosen):
                name = calendar.props.get("D:displayname", "") or calendar.path.strip("/")
                w.calendar_names[calendar.path] = name
                for item in await self._read(calendar):
                    if item.kind is EventKind.APPOINTMENT:
                        first = appointments.setdefault(item.uid, item)  # a UID in two calendars: the first wins
                        if first is not item:
                            w.context.audit.record(Decision.SKIPPED_DUPLICATE, w.user, item.uid, f"the same UID is also in {first.path}, whose copy is the one sent to iCloud", calendar=calendar.path)  # noqa: E501
                    else:
                        w.context.audit.record(Decision.SKIPPED_BLOCKED, w.user, item.uid, "a blocked slot never leaves calrelay", calendar=calendar.path)  # noqa: E501
            elif not calendar.props.get(MIRROR_ROLE_PROP):
                reason = not_synced_reason(calendar, default_kind)
                for item in await self._read(calendar):
                    w.context.audit.record(Decision.SKIPPED_SIMPLE, w.user, item.uid, reason, calendar=calendar.path)
        return appointments, mirror

    async def _read(self, calendar: CalendarInfo) -> list[LocalItem]:
        """The calendar's event objects. Only files that changed since the last pass are read and parsed."""
        stamps, items = self._snapshots.get(calendar.path, ({}, {}))
        new_stamps, changed = await self.w.store.read_changed_items(calendar.path, stamps)
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
                # Unreadable, so no UID to name it by: its resource name stands in.
                self.w.context.audit.record(Decision.WAITING, self.w.user, stored.href, f"not relayed, fix the event: {error}", calendar=calendar.path)  # noqa: E501
        self._snapshots[calendar.path] = (new_stamps, items)
        return [item for item in items.values() if item is not None]

    # -- a pass ----------------------------------------------------------------------------------------------

    async def run(self, client: Upstream, gate: Gate) -> None:
        w = self.w
        db = w.state.db
        primary = w.primary
        taken = await w.state.call(outbox.rows, db.engine, w.user)  # relay work recorded so far
        appointments, mirror = await self.local_side()
        statuses = await w.state.call(db.items, w.user, primary.remote_url)
        actions = plan_push(
            appointments, mirror, statuses, _path_of(primary.remote_url), transforms.remote_name, w.two_way
        )
        for keep in (a for a in actions if isinstance(a, Keep)):
            self._kept(keep)
        actions = [a for a in actions if not isinstance(a, Keep)]
        # Everything planned is pending until done; what iCloud refused for good keeps its reason there.
        queued = [(action_uid(a), action_name(a), "queued") for a in actions if not isinstance(a, Relocate | Forget)]
        await w.state.call(db.replace_pending, w.user, queued)
        actions = [a for a in actions if not self._still_refused(a)]
        if actions:
            logger.debug("push for %s: %s", w.user, summary(actions))
        await execute(actions, lambda action: self._one(client, gate, action), gate)
        if taken:  # the pass completed: drop the rows whose item is now reconciled with iCloud
            places = {(s.local_path, s.local_href): s.uid for s in statuses if s.local_path and s.local_href}
            places |= {(i.path, i.href): i.uid for i in [*mirror.values(), *appointments.values()]}
            pending = {p.uid for p in await w.state.call(db.pending, w.user)}
            await w.state.call(db.remove_outbox, outbox.reconciled(taken, places, pending))

    def _kept(self, keep: Keep) -> None:
        """Record why an appointment is held back (a state: noted once, not on every pass)."""
        w = self.w
        local = keep.local
        if keep.hold is Hold.ICLOUD_UID:
            reason = "its UID is an iCloud event's (in a mirror): a CRM copy never overwrites it"
            w.context.audit.record(Decision.SKIPPED_ICLOUD_UID, w.user, local.uid, reason, calendar=local.path,
                                   icloud_calendar=w.primary.remote_name)
        else:  # the deletion the pull noted when iCloud deleted it: the same state, so not noted again
            w.context.audit.record(Decision.KEPT_DELETION, w.user, local.uid, kept_reason(keep.status),
                                   calendar=local.path, icloud_calendar=w.primary.remote_name, state=True)

    def _still_refused(self, action: PushAction) -> bool:
        local = getattr(action, "local", None)
        etag = local.etag if local is not None else "deleted"
        return self._refused.get(action_uid(action)) == etag

    async def _one(self, client: Upstream, gate: Gate, action: PushAction) -> None:
        w = self.w
        db = w.state.db
        uid = action_uid(action)
        try:
            if isinstance(action, Create):
                await self._create(client, gate, action)
            elif isinstance(action, Update):
                await (
                    self._update_appointment(client, gate, action)
                    if action.status.origin == Origin.CRM
                    else self._update_icloud_born(client, gate, action)
                )
            elif isinstance(action, Delete):
                await self._delete(client, gate, action)
            elif isinstance(action, Relocate):
                await w.save(local_status(action.status, action.local))
                w.context.audit.record(Decision.NOTED, w.user, uid, relocated_reason(action), calendar=action.local.path, icloud_calendar=w.primary.remote_name)  # noqa: E501
            elif isinstance(action, Forget):
                await w.state.call(db.delete_item, w.user, action.status.calendar_url, uid)
                w.context.audit.record(Decision.FORGOTTEN, w.user, uid, "deleted in the CRM after iCloud had deleted it: nothing left to delete", calendar=action.status.local_path)  # noqa: E501
        except StopPass as stop:
            await w.state.call(db.set_pending, w.user, uid, action_name(action), waiting(stop.cause))
            w.context.audit.record(Decision.WAITING, w.user, uid, waiting(stop.cause))
            raise
        except TransientError as error:
            gate.failed += 1
            await w.state.call(db.set_pending, w.user, uid, action_name(action), f"will retry: iCloud failed ({error})")
            w.context.audit.record(Decision.WAITING, w.user, uid, "will retry: iCloud failed")
            return
        except UpstreamError as error:  # refused for good (4xx): retried only once the CRM changes the item
            self._refuse(action)
            reason = f"refused by iCloud, will retry when the item changes: {error}"
            await w.state.call(db.set_pending, w.user, uid, action_name(action), reason)
            w.context.audit.record(Decision.WAITING, w.user, uid, reason)
            logger.warning("%s of %s for %s: %s", action_name(action), uid, w.user, reason)
            return
        except ValueError as error:  # the CRM's data cannot be turned into an iCloud event
            self._refuse(action)
            await w.state.call(db.set_pending, w.user, uid, action_name(action), f"not relayed, fix the event: {error}")
            w.context.audit.record(Decision.WAITING, w.user, uid, f"not relayed, fix the event: {error}")
            return
        self._refused.pop(uid, None)
        if isinstance(action, Create | Update):
            w.stats["pushed"] += 1
        elif isinstance(action, Delete):
            w.stats["deleted"] += 1
        await w.state.call(db.clear_pending, w.user, uid)

    def _refuse(self, action: PushAction) -> None:
        local = getattr(action, "local", None)
        self._refused[action_uid(action)] = local.etag if local is not None else "deleted"

    async def _create(self, client: Upstream, gate: Gate, action: Create) -> None:
        text = self.w.outgoing(action.local)
        ours = transforms.content_hash(text)
        how = ("changed in the CRM after it was deleted in iCloud: created again" if action.status is not None
               else "new appointment in the CRM")
        try:
            etag = await gate.call(client.create(action.href, text))
        except PreconditionFailed:
            try:
                existing: RemoteObject | None = await gate.call(client.get(action.href))
            except NotFound:
                existing = None
            decision = after_refused_create(
                transforms.content_hash(existing.text) if existing is not None else None, ours
            )
            if decision is AfterRefusedCreate.UID_ELSEWHERE or existing is None:
                raise PreconditionFailed(
                    f"iCloud already has an event with UID {action.local.uid} in another calendar of this account",
                    412,
                ) from None
            if decision is AfterRefusedCreate.ADOPT:
                etag = existing.etag  # our earlier create: adopt it, do not write a second copy
                how = "new appointment in the CRM (already in iCloud from an interrupted attempt: adopted)"
            else:
                etag = await raced(gate.call(client.update(action.href, text, existing.etag)))
                how = "new appointment in the CRM (an older copy of it was in iCloud: overwritten)"
        local = action.local
        await self.w.save(
            ItemStatus(
                self.w.user, self.w.primary.remote_url, local.uid, Origin.CRM, local.path, local.href, local.etag,
                local.hash, action.href, etag, ours,
            )
        )
        self.w.context.audit.record(Decision.CREATED, self.w.user, local.uid, how, calendar=local.path, icloud_calendar=self.w.primary.remote_name)  # noqa: E501

    async def _update_appointment(self, client: Upstream, gate: Gate, action: Update) -> None:
        w = self.w
        status, local = action.status, action.local
        assert status.remote_href is not None
        audit, where = w.context.audit, {"calendar": local.path, "icloud_calendar": w.primary.remote_name}
        text = w.outgoing(local)
        try:
            # Read iCloud's copy first: what iCloud added by itself (the default alarm) must survive the PUT.
            text = transforms.keep_icloud_additions(text, (await gate.call(client.get(status.remote_href))).text)
            ours = transforms.content_hash(text)
            etag = await gate.call(client.update(status.remote_href, text, status.remote_etag or ""))
        except NotFound:
            after_missing_update(Origin(status.origin))  # RECREATE: the CRM's change brings it back
            ours = transforms.content_hash(text)
            etag = await gate.call(client.create(status.remote_href, text))
            await w.save(replace(local_status(status, local), remote_etag=etag, remote_hash=ours))
            audit.record(Decision.CREATED, w.user, local.uid, "changed in the CRM after it was deleted in iCloud: created again", **where)  # noqa: E501
            return
        except PreconditionFailed:
            current = await gate.call(client.get(status.remote_href))
            current_hash = transforms.content_hash(current.text)
            decision = after_refused_update(
                current_hash, ours, status,
                icloud_wins=winner(local.text, current.text, w.two_way) is Origin.ICLOUD,
            )
            if decision is AfterRefusedUpdate.ADOPT:
                await w.save(replace(local_status(status, local), remote_etag=current.etag, remote_hash=ours))
                audit.record(Decision.UPDATED, w.user, local.uid, "changed in the CRM", **where)
                return
            if decision is AfterRefusedUpdate.KEEP_ICLOUD:
                logger.warning("conflict on %s for %s: changed in the CRM and, later, in iCloud; iCloud's edit kept",
                               local.uid, w.user)
                audit.record(Decision.CONFLICT, w.user, local.uid, "changed in the CRM and, later, in iCloud: iCloud's edit kept", **where, winner="icloud")  # noqa: E501
                await w.apply_to_crm(current, local_status(status, local), local.text)
                return
            if decision is AfterRefusedUpdate.OVERWRITE_CONFLICT:
                why = "one-way link" if not w.two_way else "it is newer"
                logger.warning("conflict on %s for %s: changed in the CRM and in iCloud; the CRM's edit kept (%s)",
                               local.uid, w.user, "one-way" if not w.two_way else "it is newer")
                audit.record(Decision.CONFLICT, w.user, local.uid, f"changed in the CRM and in iCloud: the CRM's edit kept ({why})", **where, winner="crm")  # noqa: E501
            etag = await raced(gate.call(client.update(status.remote_href, text, current.etag)))
        await w.save(replace(local_status(status, local), remote_etag=etag, remote_hash=ours))
        audit.record(Decision.UPDATED, w.user, local.uid, "changed in the CRM", **where)

    async def _update_icloud_born(self, client: Upstream, gate: Gate, action: Update) -> None:
        """Two-way, rule 11: the CRM edited an iCloud-born event in the primary mirror."""
        w = self.w
        status, local = action.status, action.local
        assert status.remote_href is not None
        current = await gate.call(client.get(status.remote_href))
        current_hash = transforms.content_hash(current.text)
        if icloud_born_edit(current_hash, status) is IcloudBornEdit.KEEP_ICLOUD:
            logger.warning(
                "conflict on %s for %s: an iCloud-born event changed in iCloud and in the CRM; iCloud's edit kept",
                local.uid, w.user,
            )
            w.context.audit.record(Decision.CONFLICT, w.user, local.uid, "an iCloud event changed in iCloud and in the CRM: iCloud's edit kept", calendar=local.path, icloud_calendar=w.primary.remote_name, winner="icloud")  # noqa: E501
            await w.write_mirrors([(RemoteItem(local.uid, current.href, current.etag, current.text, current_hash),
                                    status)], w.primary)
            return
        # Content from the CRM, people (attendees, organizer) from iCloud: the mirror has none of them.
        text = transforms.to_icloud(transforms.merge_icloud_edit(current.text, local.text))
        etag = await raced(gate.call(client.update(status.remote_href, text, current.etag)))
        await w.save(replace(local_status(status, local), remote_etag=etag, remote_hash=transforms.content_hash(text)))
        w.context.audit.record(Decision.UPDATED, w.user, local.uid, "the CRM edited an iCloud event (two-way)", calendar=local.path, icloud_calendar=w.primary.remote_name)  # noqa: E501

    async def _delete(self, client: Upstream, gate: Gate, action: Delete) -> None:
        w = self.w
        status = action.status
        assert status.remote_href is not None
        why = "no longer an appointment in the CRM (deleted, blocked, or moved to a calendar that does not sync)"
        deleted_etag, deleted_hash = status.remote_etag, status.remote_hash
        try:
            await gate.call(client.delete(status.remote_href, status.remote_etag))
        except NotFound:
            why += "; it was already gone from iCloud"
        except PreconditionFailed:
            current = await gate.call(client.get(status.remote_href))
            current_hash = transforms.content_hash(current.text)
            if after_refused_delete(current_hash, status) is AfterRefusedDelete.KEEP:
                # Edited in iCloud after the CRM deleted its blocked slot: the next pull imports it again.
                logger.warning("conflict on %s for %s: deleted in the CRM, edited in iCloud; kept", status.uid, w.user)
                w.context.audit.record(Decision.CONFLICT, w.user, status.uid, "deleted in the CRM, edited in iCloud: iCloud's event kept", calendar=status.local_path, winner="icloud")  # noqa: E501
                await w.state.call(w.state.db.delete_item, w.user, status.calendar_url, status.uid)
                return
            await raced(gate.call(client.delete(status.remote_href, current.etag)))
            deleted_etag, deleted_hash = current.etag, current_hash
        await w.save(tombstone(status, deleted_etag, deleted_hash))
        w.context.audit.record(Decision.DELETED, w.user, status.uid, why, calendar=status.local_path)


async def execute(actions: Iterable[T], run: Callable[[T], Awaitable[None]], gate: Gate) -> None:
    """Run the actions concurrently (the gate bounds the requests); a bug in one is raised after all ran."""
    results = await asyncio.gather(*(run(action) for action in actions), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, StopPass):
            raise result
    gate.check()


async def raced(work: Awaitable[T]) -> T:
    """A conditional write made right after re-reading iCloud's copy. A 412 now means iCloud changed it again
    in between (a race, not a refusal): the item is retried with the next pass, which reads it afresh."""
    try:
        return await work
    except PreconditionFailed as error:
        raise TransientError(f"changed in iCloud again while being written ({error})", 412) from error


def integrates(calendar: CalendarInfo, default_kind: CalendarKind, chosen: frozenset[str]) -> bool:
    if calendar.props.get(MIRROR_ROLE_PROP):
        return False
    try:
        kind = CalendarKind.parse(calendar.props.get(CALENDAR_KIND_PROP) or default_kind.value)
    except ValueError:
        return False
    return kind.integrates and (not chosen or calendar.path in chosen)


def not_synced_reason(calendar: CalendarInfo, default_kind: CalendarKind) -> str:
    kind = calendar.props.get(CALENDAR_KIND_PROP) or default_kind.value
    if kind == CalendarKind.SIMPLE.value:
        return "in a Simple calendar, which never syncs to iCloud"
    return f"calendar {calendar.path} ({kind}) is not one of the calendars chosen for this link"


def relocated_reason(action: Relocate) -> str:
    if action.status.local_path != action.local.path:
        return f"moved in the CRM from {action.status.local_path} to {action.local.path}; iCloud already has it"
    return "rewritten in the CRM without a change iCloud would see: nothing to send"


def kept_reason(status: ItemStatus) -> str:
    """Why an item deleted in iCloud stays in calrelay (rule 8)."""
    if status.origin == Origin.CRM:
        return ("deleted in iCloud; a CRM appointment is never deleted by iCloud, and is sent again only if the "
                "CRM changes it")
    return "deleted in iCloud; kept as a blocked slot (the link keeps iCloud deletions)"


def local_status(status: ItemStatus, local: LocalItem) -> ItemStatus:
    return replace(status, local_path=local.path, local_href=local.href, local_etag=local.etag, local_hash=local.hash)


def summary(actions: list[PushAction] | list[PullAction]) -> str:
    counts: dict[str, int] = {}
    for action in actions:
        counts[action_name(action)] = counts.get(action_name(action), 0) + 1
    return ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))


def _path_of(url: str) -> str:
    path = urlsplit(url).path
    return path if path.endswith("/") else path + "/"
