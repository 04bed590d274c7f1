"""What the executor does when iCloud answers unexpectedly: pure decisions beside :mod:`proxy.relay.plan`.

:mod:`proxy.relay.plan` decides *what* to do from the two sides and the status; this module decides what a
refused write or a partial read *means*, from the same three kinds of facts (our version, iCloud's current
version, the status). The executors in :mod:`proxy.relay.push` and :mod:`proxy.relay.pull` only carry the
answer out, so every branch of the relay's conflict handling is a function that a unit test can call.

Content is compared by hash (:func:`proxy.relay.transforms.content_hash`); ``None`` stands for "not there".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from proxy.model import Origin
from proxy.relay.plan import outdated, same_href, vanished
from proxy.state import ItemStatus


class AfterRefusedCreate(StrEnum):
    """A create (``If-None-Match: *``) answered 412: something is already at our href, or the UID elsewhere."""

    ADOPT = "adopt"  # our own earlier create, made before a crash kept us from recording it
    OVERWRITE = "overwrite"  # an older version of ours at our (UID-derived) href: bring it up to date
    UID_ELSEWHERE = "uid-elsewhere"  # nothing at our href: iCloud holds the UID in another calendar; refuse


def after_refused_create(existing_hash: str | None, our_hash: str) -> AfterRefusedCreate:
    """``existing_hash``: what is at our href now (``None``: 404 there)."""
    if existing_hash is None:
        return AfterRefusedCreate.UID_ELSEWHERE
    if existing_hash == our_hash:
        return AfterRefusedCreate.ADOPT
    return AfterRefusedCreate.OVERWRITE


class AfterRefusedUpdate(StrEnum):
    """An update of a CRM appointment (``If-Match``) answered 412: iCloud's copy changed since the status."""

    ADOPT = "adopt"  # iCloud already holds exactly our version (our update, not recorded before a crash)
    OVERWRITE = "overwrite"  # only ETag churn (housekeeping) since the status: write ours at the new ETag
    OVERWRITE_CONFLICT = "overwrite-conflict"  # both changed and the CRM's edit wins: write ours, log it
    KEEP_ICLOUD = "keep-icloud"  # both changed and iCloud's edit wins (two-way, later): apply it to the CRM


def after_refused_update(
    current_hash: str, our_hash: str, status: ItemStatus, icloud_wins: bool
) -> AfterRefusedUpdate:
    """``current_hash``: iCloud's copy now; ``icloud_wins``: :func:`proxy.relay.conflicts.winner` said iCloud
    (only consulted when iCloud's content really changed)."""
    if current_hash == our_hash:
        return AfterRefusedUpdate.ADOPT
    if current_hash == status.remote_hash:
        return AfterRefusedUpdate.OVERWRITE
    return AfterRefusedUpdate.KEEP_ICLOUD if icloud_wins else AfterRefusedUpdate.OVERWRITE_CONFLICT


class AfterMissingUpdate(StrEnum):
    """An update answered 404: deleted in iCloud, changed in the CRM since."""

    RECREATE = "recreate"  # the CRM's change brings it back (a deletion in iCloud is only kept while unchanged)


def after_missing_update(origin: Origin) -> AfterMissingUpdate:
    del origin  # the same for every origin today; kept as a parameter so the rule is stated where it is used
    return AfterMissingUpdate.RECREATE


class IcloudBornEdit(StrEnum):
    """Two-way, rule 11: the CRM edited an iCloud-born event in the primary mirror."""

    MERGE = "merge"  # iCloud unchanged since the status: CRM content, iCloud's people, written back
    KEEP_ICLOUD = "keep-icloud"  # changed in iCloud too: iCloud's edit wins, the mirror is refreshed


def icloud_born_edit(current_hash: str, status: ItemStatus) -> IcloudBornEdit:
    return IcloudBornEdit.MERGE if current_hash == status.remote_hash else IcloudBornEdit.KEEP_ICLOUD


class AfterRefusedDelete(StrEnum):
    """A delete (``If-Match``) answered 412: iCloud's copy changed since the status."""

    DELETE_AGAIN = "delete-again"  # delete at the current ETag: the CRM's deletion stands
    KEEP = "keep"  # an iCloud-born event edited in iCloud after the CRM deleted its blocked slot: keep it


def after_refused_delete(current_hash: str, status: ItemStatus) -> AfterRefusedDelete:
    if status.origin == Origin.ICLOUD and current_hash != status.remote_hash:
        return AfterRefusedDelete.KEEP
    return AfterRefusedDelete.DELETE_AGAIN


class TokenState(StrEnum):
    """How the next pull of a calendar asks for changes."""

    NONE = "none"  # never pulled
    VALID = "valid"  # incremental, from the stored sync token
    REFUSED = "refused"  # the server refused the token: the last pull compared a full listing
    REMIRROR = "remirror"  # the availability policies changed: list it whole and write every mirror again


@dataclass(frozen=True)
class Delta:
    """What a pull fetches (hrefs whose ETag differs from the status) and what it treats as deleted."""

    wanted: list[str]
    deleted: list[str]


def delta_from_changes(
    changed: Mapping[str, str], deleted: Iterable[str], complete: bool, statuses: Iterable[ItemStatus]
) -> Delta:
    """A sync-collection answer as a delta. A *complete* answer (initial sync) lists everything, so what it
    does not list is gone; an incremental one reports deletions itself."""
    rows = list(statuses)
    if complete:
        return Delta(outdated(changed, rows), vanished(changed, rows))
    known = {same_href(s.remote_href): s.remote_etag for s in rows}
    return Delta(sorted(h for h, etag in changed.items() if known.get(same_href(h)) != etag), sorted(set(deleted)))


def delta_from_listing(listing: Mapping[str, str], statuses: Iterable[ItemStatus]) -> Delta:
    """The sync token was refused: a full ETag listing compared with the status gives the same delta."""
    rows = list(statuses)
    return Delta(outdated(listing, rows), vanished(listing, rows))


@dataclass(frozen=True)
class PullCursor:
    """Where the next pull of a calendar starts: the collection's ctag, the sync token and its state."""

    ctag: str | None
    token: str | None
    token_state: TokenState


def next_cursor(
    previous: PullCursor, ctag: str | None, token: str | None, refused: bool, wanted: int, fetched: int
) -> PullCursor:
    """After a pull: advance to the server's new ctag/token, unless some changed objects could not be read
    yet (iCloud's visibility lag): then keep the old ones, so the server reports those objects again."""
    state = TokenState.REFUSED if refused else TokenState.VALID
    if fetched < wanted:
        # A re-mirror not finished is asked for again, whole.
        return PullCursor(previous.ctag, previous.token,
                          TokenState.REMIRROR if previous.token_state is TokenState.REMIRROR else state)
    return PullCursor(ctag, token, state)


def pull_unchanged(ctag: str | None, previous: PullCursor) -> bool:
    """The calendar's ctag is the one of the last complete pull: nothing to ask for."""
    return bool(ctag) and ctag == previous.ctag and previous.token_state not in (TokenState.NONE,
                                                                                  TokenState.REMIRROR)


def remirror_delta(delta: Delta, listing: Mapping[str, str], statuses: Iterable[ItemStatus]) -> Delta:
    """A re-mirror (changed policies) also fetches every listed event that has a mirror, changed or not."""
    mirrored = {same_href(s.remote_href) for s in statuses
                if s.origin == Origin.ICLOUD and s.local_href and s.remote_href}
    return Delta(sorted(set(delta.wanted) | {href for href in listing if same_href(href) in mirrored}),
                 delta.deleted)
