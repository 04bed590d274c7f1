"""What the upstream client hands to the relay: immutable snapshots of the remote side."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteCalendar:
    url: str  # absolute URL of the collection, trailing slash
    name: str  # last path segment, decoded (iCloud calendar id, e.g. "work")
    display_name: str
    color: str | None
    components: frozenset[str]  # e.g. {"VEVENT"} or {"VTODO"}
    writable: bool  # current-user-privilege-set grants write, write-content or bind (never for subscriptions)
    shared: bool  # shared to this user by someone else (not owned)
    subscribed: bool  # CS:subscribed (webcal) calendar
    ctag: str | None
    sync_token: str | None


@dataclass(frozen=True)
class Account:
    principal_url: str
    home_url: str
    calendars: tuple[RemoteCalendar, ...]  # calendar collections only; inbox/outbox/notification skipped


@dataclass(frozen=True)
class RemoteObject:
    href: str  # URL path as on the wire (percent-encoded, starting with "/")
    etag: str  # normalised: surrounding whitespace removed, always double-quoted
    text: str  # iCalendar text; line endings as python-caldav delivers them (LF)
    #: Why the object could not be read (it is larger than the client reads); its text is empty then.
    problem: str | None = None


@dataclass(frozen=True)
class Changes:
    token: str | None  # the new sync token (None if the server gave none)
    changed: dict[str, str]  # href path -> etag, for created or modified objects
    deleted: frozenset[str]  # href paths reported deleted (404 responses)
    complete: bool  # True when `changed` is the whole collection (initial sync)
