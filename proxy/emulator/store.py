"""The emulator's data model: collections, calendar objects, ETags, ctags, sync tokens and the UID index.

Everything is held in memory; when a data directory is given, the whole state is written to
``<data>/emulator-state.json`` (atomically) within a quarter of a second of a change and on stop, and read
back on start, so ETags and sync tokens stay valid across a restart, as they do on a real server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import string
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from proxy.emulator.accounts import SPECIAL_COLLECTIONS, Account, CalendarSpec

log = logging.getLogger(__name__)

STATE_FILE = "emulator-state.json"
#: sync-collection changes kept per collection; older tokens are answered with 403 (expired).
HISTORY_LIMIT = 1000
ETAG_ALPHABET = string.ascii_lowercase + string.digits


def new_etag() -> str:
    """A short opaque ETag value such as ``l5guvnaq`` (unquoted; HTTP adds the quotes)."""
    return "".join(secrets.choice(ETAG_ALPHABET) for _ in range(8))


@dataclass
class CalendarObject:
    name: str
    body: str
    etag: str
    uid: str
    component: str
    #: wall-clock time from which REPORTs show the object (the eventual-consistency lag fault)
    visible_at: float = 0.0

    def visible(self, now: float) -> bool:
        return self.visible_at <= now


@dataclass
class Collection:
    id: str
    #: calendar | inbox | outbox | notification
    kind: str
    displayname: str | None
    components: tuple[str, ...]
    color: str | None
    access: str = "owner"
    source: str | None = None
    order: int = 0
    revision: int = 0
    #: the oldest revision a sync token may name; older tokens have been expired
    history_floor: int = 0
    history: list[tuple[int, str]] = field(default_factory=list)
    #: wall-clock time of each history entry (sync tokens expire by age)
    history_times: list[float] = field(default_factory=list)
    objects: dict[str, CalendarObject] = field(default_factory=dict)

    @property
    def is_calendar(self) -> bool:
        return self.kind == "calendar"

    @property
    def writable(self) -> bool:
        return self.is_calendar and self.access in ("owner", "shared-owner", "read-write")

    @property
    def deletable(self) -> bool:
        return self.is_calendar and self.access in ("owner", "shared-owner")

    def record_change(self, revision: int, name: str, when: float) -> None:
        self.revision = revision
        self.history.append((revision, name))
        self.history_times.append(when)
        if len(self.history) > HISTORY_LIMIT:
            dropped = self.history[: len(self.history) - HISTORY_LIMIT]
            self.history = self.history[len(dropped) :]
            self.history_times = self.history_times[len(dropped) :]
            self.history_floor = dropped[-1][0]

    def expired_floor(self, cutoff: float) -> int:
        """The oldest revision a token may name when changes before ``cutoff`` have been cleaned up.

        CCS removes revision rows older than ``SyncTokenLifetimeDays`` and refuses tokens older than the newest
        removed row; a token naming the latest change stays valid however old that change is.
        """
        floor = self.history_floor
        for (revision, _name), when in zip(self.history, self.history_times, strict=False):
            if when >= cutoff:
                break
            floor = revision
        return floor


@dataclass
class AccountState:
    account: Account
    collections: dict[str, Collection]
    revision: int = 0
    #: UID → (collection id, object name): iCloud keeps UIDs unique across the whole account
    uid_index: dict[str, tuple[str, str]] = field(default_factory=dict)

    def next_revision(self) -> int:
        self.revision += 1
        return self.revision


class SyncTokenError(ValueError):
    """The token is unknown, malformed, for another collection, or too old."""


def _initial_collections(account: Account) -> dict[str, Collection]:
    collections = {spec.id: _calendar_from_spec(spec) for spec in account.calendars}
    collections["inbox"] = Collection("inbox", "inbox", None, ("VEVENT",), None)
    collections["outbox"] = Collection("outbox", "outbox", None, ("VEVENT", "VTODO"), None)
    collections["notification"] = Collection("notification", "notification", None, (), None)
    return collections


def _calendar_from_spec(spec: CalendarSpec) -> Collection:
    return Collection(
        id=spec.id,
        kind="calendar",
        displayname=spec.displayname,
        components=(spec.component,),
        color=spec.color,
        access=spec.access,
        source=spec.source,
        order=spec.order,
    )


class Store:
    def __init__(self, accounts: list[Account], data_dir: str | Path | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir else None
        #: wall clock (seconds since the epoch) for change times and token ages; tests replace it
        self.clock: Callable[[], float] = time.time
        self.dirty = False
        self.epoch = secrets.token_hex(4)
        self.accounts: dict[str, AccountState] = {
            account.dsid: AccountState(account, _initial_collections(account)) for account in accounts
        }
        if self.data_dir:
            self._load()

    # -- lookup ---------------------------------------------------------------------------------------

    def by_dsid(self, dsid: str) -> AccountState | None:
        return self.accounts.get(dsid)

    def by_apple_id(self, apple_id: str) -> AccountState | None:
        wanted = apple_id.lower()
        return next((s for s in self.accounts.values() if s.account.apple_id.lower() == wanted), None)

    # -- tokens and tags -------------------------------------------------------------------------------

    def ctag(self, state: AccountState, collection: Collection | None) -> str:
        """An opaque blob that changes whenever the collection (or, for None, the home) changes."""
        revision = collection.revision if collection else state.revision
        key = f"{self.epoch}/{state.account.dsid}/{collection.id if collection else ''}/{revision}"
        return "HwoQEgwAA" + base64.b64encode(hashlib.sha256(key.encode()).digest()[:30]).decode()

    def sync_token(
        self, state: AccountState, collection: Collection | None, revision: int | None = None
    ) -> str:
        scope = collection.id if collection else ""
        value = revision if revision is not None else (collection.revision if collection else state.revision)
        raw = f"{self.epoch}/{scope}/{value}".encode()
        return "HwoQEgwAA" + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def parse_sync_token(self, collection: Collection, token: str, lifetime_days: float = 0.0) -> int:
        try:
            if not token.startswith("HwoQEgwAA"):
                raise ValueError("foreign prefix")
            encoded = token.removeprefix("HwoQEgwAA")
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            epoch, scope, revision_text = raw.split("/")
            revision = int(revision_text)
        except (ValueError, UnicodeDecodeError) as error:
            raise SyncTokenError("malformed sync token") from error
        if epoch != self.epoch or scope != collection.id:
            raise SyncTokenError("sync token from another collection or server life")
        if revision > collection.revision or revision < collection.history_floor:
            raise SyncTokenError("sync token expired")
        if lifetime_days and revision < collection.expired_floor(self.clock() - lifetime_days * 86400):
            raise SyncTokenError(f"sync token older than {lifetime_days:g} days")
        return revision

    # -- mutations ------------------------------------------------------------------------------------

    def put_object(
        self,
        state: AccountState,
        collection: Collection,
        name: str,
        body: str,
        uid: str,
        component: str,
        visible_at: float = 0.0,
    ) -> tuple[CalendarObject, bool]:
        """Create or replace an object; returns it and whether it was created."""
        existing = collection.objects.get(name)
        if existing and existing.uid != uid:
            state.uid_index.pop(existing.uid, None)
        obj = CalendarObject(
            name, body, new_etag(), uid, component, existing.visible_at if existing else visible_at
        )
        collection.objects[name] = obj
        state.uid_index[uid] = (collection.id, name)
        collection.record_change(state.next_revision(), name, self.clock())
        self.save()
        return obj, existing is None

    def delete_object(self, state: AccountState, collection: Collection, name: str) -> CalendarObject:
        obj = collection.objects.pop(name)
        state.uid_index.pop(obj.uid, None)
        collection.record_change(state.next_revision(), name, self.clock())
        self.save()
        return obj

    def churn_etags(
        self, state: AccountState, collection_id: str | None = None, name: str | None = None
    ) -> list[str]:
        """Give objects a new ETag without a client write (iCloud housekeeping, a sharer's edit).

        Returns the hrefs that changed.
        """
        changed: list[str] = []
        for collection in state.collections.values():
            if collection_id is not None and collection.id != collection_id:
                continue
            for obj in collection.objects.values():
                if name is not None and obj.name != name:
                    continue
                obj.etag = new_etag()
                collection.record_change(state.next_revision(), obj.name, self.clock())
                changed.append(f"/{state.account.dsid}/calendars/{collection.id}/{obj.name}")
        if changed:
            self.save()
        return changed

    def create_calendar(
        self,
        state: AccountState,
        calendar_id: str,
        displayname: str | None,
        component: str,
        color: str | None,
    ) -> Collection:
        collection = Collection(
            id=calendar_id,
            kind="calendar",
            displayname=displayname,
            components=(component,),
            color=color,
            order=max((c.order for c in state.collections.values()), default=0) + 1,
        )
        collection.revision = state.next_revision()
        state.collections[calendar_id] = collection
        self.save()
        return collection

    def delete_calendar(self, state: AccountState, collection: Collection) -> None:
        for obj in collection.objects.values():
            state.uid_index.pop(obj.uid, None)
        del state.collections[collection.id]
        state.next_revision()
        self.save()

    def update_calendar(self, state: AccountState, collection: Collection, **values: object) -> None:
        for key, value in values.items():
            setattr(collection, key, value)
        collection.revision = state.next_revision()
        self.save()

    # -- persistence ----------------------------------------------------------------------------------

    def save(self) -> None:
        """Note that the state changed. Writing the whole document on every change would make a bulk load
        quadratic, so the server flushes it shortly after (``flush``), and on stop."""
        self.dirty = True

    def flush(self) -> None:
        """Write the state to ``data_dir`` if it changed since the last flush."""
        if not self.data_dir or not self.dirty:
            return
        self.dirty = False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        document = {
            "epoch": self.epoch,
            "accounts": {
                dsid: {
                    "revision": state.revision,
                    "collections": [asdict(collection) for collection in state.collections.values()],
                }
                for dsid, state in self.accounts.items()
            },
        }
        handle, temporary = tempfile.mkstemp(dir=self.data_dir, prefix=".state-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(document, stream)
        os.replace(temporary, self.data_dir / STATE_FILE)

    def _load(self) -> None:
        assert self.data_dir is not None
        path = self.data_dir / STATE_FILE
        if not path.exists():
            return
        document = json.loads(path.read_text(encoding="utf-8"))
        self.epoch = document["epoch"]
        for dsid, saved in document["accounts"].items():
            state = self.accounts.get(dsid)
            if state is None:
                log.warning("state for DSID %s ignored: no such account in the accounts file", dsid)
                continue
            state.revision = saved["revision"]
            state.collections = {}
            for raw in saved["collections"]:
                objects = {name: CalendarObject(**obj) for name, obj in raw.pop("objects").items()}
                history = [(int(revision), name) for revision, name in raw.pop("history")]
                raw["components"] = tuple(raw["components"])
                # States written before change times were kept: count their history as recent.
                raw.setdefault("history_times", [self.clock()] * len(history))
                state.collections[raw["id"]] = Collection(**raw, objects=objects, history=history)
            for special in SPECIAL_COLLECTIONS:
                if special not in state.collections:
                    raise ValueError(f"{path}: collection {special} missing for DSID {dsid}")
            state.uid_index = {
                obj.uid: (collection.id, obj.name)
                for collection in state.collections.values()
                for obj in collection.objects.values()
            }
        log.info("emulator state restored from %s", path)
