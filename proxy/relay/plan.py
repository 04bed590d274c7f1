"""The relay's decisions, as pure functions over the two sides and the status database.

This is the synchronisation algorithm of vdirsyncer (``vdirsyncer/sync/__init__.py``; Markus Unterwaditzer,
"How vdirsyncer works", docs/contributing.rst), specialised to calrelay's rules. For each UID there are up to
three records: the item on the calrelay side, the item on the iCloud side, and the *status*, the state of
both as of the last time they were known to agree. Comparing each side with the status tells which side
changed, so a pass can be repeated at any time, after a crash as after a success: whatever was not done is
found again, and whatever was done is not done twice.

The rules of the design (§3) decide what a difference means:

- **Push** (:func:`plan_push`, rules 6 and 11). Appointments of the integrating booking calendars are created,
  changed and deleted on the primary iCloud calendar; blocked slots and Simple calendars never leave, and an
  appointment that turns into a blocked slot (or leaves the integrating calendars) is deleted from iCloud. In
  two-way mode, a CRM edit or deletion of an iCloud-born event in the primary mirror flows back to iCloud.
- **Pull** (:func:`plan_pull`, rules 3-5, 7-9). iCloud-born events are imported into the mirror as blocked
  slots and refreshed when they change; events calrelay pushed are recognised by the status and never imported
  (loop prevention). An iCloud edit of a CRM appointment updates the appointment in two-way mode and is only
  recorded in one-way mode. Deletions in iCloud are not propagated unless the link asks for it, and then only
  for iCloud-born blocked slots: CRM appointments are never deleted by iCloud.

Content is compared by :func:`proxy.relay.transforms.content_hash`, so ETag churn and Apple's housekeeping
(duplicate DTSTAMPs, ``X-APPLE-*``) never count as a change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from urllib.parse import unquote

from proxy.model import EventKind, Origin
from proxy.state import ItemStatus


@dataclass(frozen=True)
class LocalItem:
    """An object on the calrelay side: in a booking calendar, or in a mirror."""

    uid: str
    path: str  # the collection
    href: str
    etag: str
    text: str
    hash: str
    kind: EventKind = EventKind.APPOINTMENT


@dataclass(frozen=True)
class RemoteItem:
    """An object on the iCloud side."""

    uid: str
    href: str
    etag: str
    text: str
    hash: str


# -- push actions (calrelay -> iCloud) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    """A new CRM appointment: create it on the primary calendar at ``href`` (stable per UID). ``status``: the
    status of one deleted in iCloud and changed in the CRM since (which brings it back), else None."""

    local: LocalItem
    href: str
    status: ItemStatus | None = None


@dataclass(frozen=True)
class Update:
    """The CRM changed an item that is in iCloud: an appointment, or (two-way) an iCloud-born event."""

    local: LocalItem
    status: ItemStatus


@dataclass(frozen=True)
class Delete:
    """Remove from iCloud what the CRM no longer has as an appointment (or deleted from the primary mirror)."""

    status: ItemStatus


@dataclass(frozen=True)
class Relocate:
    """Same content, new place or ETag on the calrelay side (e.g. moved between booking calendars)."""

    local: LocalItem
    status: ItemStatus


@dataclass(frozen=True)
class Forget:
    """Gone on both sides: drop the status."""

    status: ItemStatus


# -- pull actions (iCloud -> calrelay) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """An iCloud-born event calrelay has not seen: a new blocked slot in the mirror."""

    remote: RemoteItem


@dataclass(frozen=True)
class RefreshMirror:
    """An iCloud-born event changed in iCloud: update its blocked slot."""

    remote: RemoteItem
    status: ItemStatus


@dataclass(frozen=True)
class ApplyToCrm:
    """Two-way: iCloud changed a CRM appointment; update the appointment in its booking calendar."""

    remote: RemoteItem
    status: ItemStatus


class Note(StrEnum):
    """Why a change in iCloud is only recorded, not acted on."""

    HOUSEKEEPING = "housekeeping"  # same content, new ETag: Apple's housekeeping (DTSTAMP, X-APPLE-*)
    MOVED = "moved"  # same content at a new href in the same iCloud calendar
    ONE_WAY = "one-way"  # iCloud edited a CRM appointment and the link is one-way: the CRM version stays (rule 9)


@dataclass(frozen=True)
class NoteRemote:
    """The remote ETag changed without a change that calrelay acts on (``note`` says which case)."""

    remote: RemoteItem
    status: ItemStatus
    note: Note = Note.HOUSEKEEPING


class Hold(StrEnum):
    """Why a CRM appointment is not sent to iCloud although it is in an integrating booking calendar."""

    ICLOUD_UID = "icloud-uid"  # its UID is an iCloud-born event's: never overwritten with a CRM copy
    ICLOUD_DELETION = "icloud-deletion"  # deleted in iCloud and unchanged in the CRM since (rule 8)


@dataclass(frozen=True)
class Keep:
    """Nothing to send for an appointment, by rule (``hold`` says which): recorded, not executed."""

    local: LocalItem
    status: ItemStatus
    hold: Hold


@dataclass(frozen=True)
class RemoteDeleted:
    """Deleted in iCloud. ``remove_mirror``: also remove the blocked slot (icloud_deletions = propagate)."""

    status: ItemStatus
    remove_mirror: bool


PushAction = Create | Update | Delete | Relocate | Forget | Keep
PullAction = Import | RefreshMirror | ApplyToCrm | NoteRemote | RemoteDeleted | Forget


def action_name(action: PushAction | PullAction) -> str:
    return type(action).__name__.lower()


def action_uid(action: PushAction | PullAction) -> str:
    if isinstance(action, Create | Relocate | Keep):
        return action.local.uid
    if isinstance(action, Update):
        return action.status.uid
    if isinstance(action, Import):
        return action.remote.uid
    return action.status.uid


def plan_push(
    appointments: Mapping[str, LocalItem],
    primary_mirror: Mapping[str, LocalItem],
    statuses: Iterable[ItemStatus],
    calendar_path: str,
    remote_name: Callable[[str], str],
    two_way: bool,
) -> list[PushAction]:
    """What to do on the primary iCloud calendar so that it reflects the CRM.

    ``appointments``: UID -> the CRM appointment (already filtered: integrating booking calendars, not
    blocked). ``primary_mirror``: UID -> item of the primary calendar's mirror. ``statuses``: the status rows of
    the primary calendar. ``calendar_path``: the primary calendar's URL path (ends with "/"); ``remote_name``:
    UID -> resource name (stable, so a repeated create is recognised by iCloud).
    """
    actions: list[PushAction] = []
    by_uid = {status.uid: status for status in statuses}
    for uid, local in sorted(appointments.items()):
        status = by_uid.get(uid)
        if status is not None and deleted_by_calrelay(status):
            status = None  # an appointment again under a UID calrelay deleted from iCloud: a new one
        if status is None or status.origin != Origin.CRM or status.remote_href is None:
            if status is not None and status.origin != Origin.CRM:
                actions.append(Keep(local, status, Hold.ICLOUD_UID))  # never overwrite an iCloud event with a CRM copy
                continue
            if status is not None and status.local_hash == local.hash:
                # Deleted in iCloud and unchanged since: iCloud deletions are not undone (rule 8).
                actions.append(Keep(local, status, Hold.ICLOUD_DELETION))
                continue
            actions.append(Create(local, calendar_path + remote_name(uid), status))
        elif status.local_hash != local.hash:
            actions.append(Update(local, status))
        elif (status.local_path, status.local_href, status.local_etag) != (local.path, local.href, local.etag):
            actions.append(Relocate(local, status))
    for status in by_uid.values():
        if deleted_by_calrelay(status):
            continue  # already deleted from iCloud: the pull drops the status once iCloud no longer lists it
        if status.origin == Origin.CRM and status.uid not in appointments:
            actions.append(Delete(status) if status.remote_href else Forget(status))
        elif status.origin == Origin.ICLOUD and two_way and status.remote_href and status.local_href:
            mirrored = primary_mirror.get(status.uid)
            if mirrored is None:
                actions.append(Delete(status))  # deleted from the primary mirror by the CRM (rule 11)
            elif mirrored.hash != status.local_hash:
                actions.append(Update(mirrored, status))
    return actions


def plan_pull(
    changed: Iterable[RemoteItem],
    deleted_hrefs: Iterable[str],
    statuses: Iterable[ItemStatus],
    two_way: bool,
    propagate_deletions: bool,
    remirror: bool = False,
) -> list[PullAction]:
    """What to do on the calrelay side so that it reflects one iCloud calendar.

    ``changed``: the remote items reported new or modified; ``deleted_hrefs``: hrefs reported deleted (for a
    full listing, every known href that is no longer listed). ``statuses``: the calendar's status rows.
    ``remirror``: the availability policies changed, so every iCloud-born event's blocked slot is written
    again, changed or not.
    """
    rows = list(statuses)
    by_uid = {status.uid: status for status in rows}
    by_href = {same_href(status.remote_href): status for status in rows if status.remote_href}
    actions: list[PullAction] = []
    seen: set[str] = set()
    for remote in sorted(changed, key=lambda r: r.uid):
        seen.add(remote.uid)
        status = by_uid.get(remote.uid)
        if status is not None and deleted_by_calrelay(status):
            if status.remote_hash == remote.hash:
                continue  # the object calrelay deleted, fetched just before (or listed late): not iCloud's own
            status = None  # iCloud has a new event under that UID since
        if status is None:
            actions.append(Import(remote))
        elif remirror and status.origin == Origin.ICLOUD and status.local_href:
            actions.append(RefreshMirror(remote, status))
        elif status.remote_hash == remote.hash and same_href(status.remote_href) == same_href(remote.href):
            if status.remote_etag != remote.etag:
                actions.append(NoteRemote(remote, status, Note.HOUSEKEEPING))  # nothing to apply
        elif status.remote_hash == remote.hash:
            actions.append(NoteRemote(remote, status, Note.MOVED))
        elif status.origin == Origin.ICLOUD:
            actions.append(RefreshMirror(remote, status))
        elif two_way:
            actions.append(ApplyToCrm(remote, status))
        else:
            actions.append(NoteRemote(remote, status, Note.ONE_WAY))  # one-way: the CRM version stays (rule 9)
    for href in sorted(set(deleted_hrefs)):
        status = by_href.get(same_href(href))
        if status is None or status.uid in seen:
            continue
        if status.local_href is None:  # gone on the calrelay side too (for one calrelay deleted: as it did)
            actions.append(Forget(status))
        else:
            actions.append(RemoteDeleted(status, remove_mirror=propagate_deletions and status.origin == Origin.ICLOUD))
    return actions


def deleted_by_calrelay(status: ItemStatus) -> bool:
    """Whether ``status`` is the tombstone calrelay keeps after deleting an object from iCloud.

    The status outlives the object until a pull sees iCloud no longer list it: a pull that fetched the object
    just before the push deleted it (or a listing that still shows it, iCloud's visibility lag) would
    otherwise take it for an iCloud-born event and bring a deleted appointment back as a blocked slot.
    """
    return status.local_href is None and status.remote_href is not None


def tombstone(status: ItemStatus, etag: str | None, content_hash: str | None) -> ItemStatus:
    """The status kept once calrelay deleted the object from iCloud, as it was then (``etag``, ``content_hash``)."""
    return replace(status, local_path=None, local_href=None, local_etag=None, local_hash=None,
                   remote_etag=etag, remote_hash=content_hash)


def same_href(href: str | None) -> str:
    """An href as compared: percent-decoded (iCloud lists ``abc%40x.ics`` for the ``abc@x.ics`` we wrote)."""
    return unquote(href or "")


def vanished(listing: Mapping[str, str], statuses: Iterable[ItemStatus]) -> list[str]:
    """Known remote hrefs missing from a full listing: deletions the server did not report as such."""
    listed = {same_href(href) for href in listing}
    return sorted(s.remote_href for s in statuses if s.remote_href and same_href(s.remote_href) not in listed)


def outdated(listing: Mapping[str, str], statuses: Iterable[ItemStatus]) -> list[str]:
    """Hrefs of a full listing whose ETag differs from the status: the only ones worth fetching."""
    known = {same_href(s.remote_href): s.remote_etag for s in statuses if s.remote_href}
    return sorted(href for href, etag in listing.items() if known.get(same_href(href)) != etag)
