"""Emulated iCloud accounts: the TOML accounts file and the built-in default account.

An account is what iCloud knows about an Apple ID: its DSID (the all-digit principal ID), the app-specific
passwords that CalDAV accepts, the main Apple ID password that CalDAV must refuse, and the collections of its
calendar home. Only the *initial* collections are described here; objects live in the store.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

APP_PASSWORD_PATTERN = re.compile(r"^[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}$")
COMPONENTS = ("VEVENT", "VTODO")

#: owner: the user's own calendar; shared-owner: the user's own calendar that they share out
#: (resourcetype carries CS:shared-owner); read-only: a calendar shared *to* the user as view-only;
#: read-write: shared to the user with edit rights; subscribed: a webcal subscription (CS:subscribed).
Access = Literal["owner", "shared-owner", "read-only", "read-write", "subscribed"]
ACCESS_VALUES: tuple[str, ...] = ("owner", "shared-owner", "read-only", "read-write", "subscribed")

#: The collections iCloud creates in every home; they are not calendars a client may write events to.
SPECIAL_COLLECTIONS = ("inbox", "outbox", "notification")


class AccountsError(ValueError):
    """The accounts file is malformed; the message names the account and key."""


@dataclass(frozen=True)
class CalendarSpec:
    """An initial calendar collection of an account's home."""

    id: str
    displayname: str
    component: str = "VEVENT"
    color: str = "#1BADF8FF"
    access: Access = "owner"
    #: the feed URL of a subscribed calendar (``CS:source``)
    source: str | None = None
    order: int = 0

    @property
    def writable(self) -> bool:
        return self.access in ("owner", "shared-owner", "read-write")


@dataclass(frozen=True)
class Account:
    apple_id: str
    dsid: str
    app_passwords: tuple[str, ...]
    full_name: str
    #: the Apple ID password: iCloud refuses it over CalDAV (only app-specific passwords work)
    main_password: str | None = None
    #: the NN of ``pNN-caldav.icloud.com`` and of the ``x-apple-user-partition`` header
    partition: int = 44
    #: further addresses reported in calendar-user-address-set after the Apple ID
    extra_addresses: tuple[str, ...] = ()
    calendars: tuple[CalendarSpec, ...] = field(default_factory=tuple)

    def accepts(self, password: str) -> bool:
        return password in self.app_passwords

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.apple_id, *self.extra_addresses)


def shared_calendar_id(apple_id: str, name: str) -> str:
    """A stable 64-hex-character ID, the shape iCloud gives calendars shared *to* a user."""
    return hashlib.sha256(f"{apple_id}/{name}".encode()).hexdigest()


def default_accounts() -> list[Account]:
    """The built-in account used when no accounts file is given."""
    apple_id = "demo@icloud.test"
    return [
        Account(
            apple_id=apple_id,
            dsid="1234567890",
            app_passwords=("abcd-efgh-ijkl-mnop",),
            main_password="demo-main-password",
            full_name="Demo User",
            partition=44,
            calendars=(
                CalendarSpec("home", "Home", color="#1BADF8FF", order=1),
                CalendarSpec("work", "Work", color="#FFFFFFFF", order=2),
                CalendarSpec(
                    shared_calendar_id(apple_id, "team"),
                    "Team (shared with me)",
                    color="#1E4C63FF",
                    access="read-only",
                    order=3,
                ),
                CalendarSpec(
                    "7B1E2F90-3C4D-4E5F-8A9B-0C1D2E3F4A5B",
                    "US Holidays",
                    color="#CC73E1FF",
                    access="subscribed",
                    source="https://calendars.icloud.test/holidays/us_en.ics",
                    order=4,
                ),
                CalendarSpec("tasks", "Reminders", component="VTODO", color="#FF9500FF", order=5),
            ),
        )
    ]


def load_accounts(path: str | Path) -> list[Account]:
    """Read an accounts TOML file (see ``config/emulator-accounts.toml``)."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise AccountsError(f"{path}: not valid TOML: {error}") from error
    entries = document.get("account")
    if not isinstance(entries, list) or not entries:
        raise AccountsError(f"{path}: expected at least one [[account]] table")
    accounts = [_parse_account(entry, index) for index, entry in enumerate(entries)]
    _check_unique(accounts)
    return accounts


def _check_unique(accounts: list[Account]) -> None:
    seen_ids: set[str] = set()
    seen_dsids: set[str] = set()
    for account in accounts:
        if account.apple_id.lower() in seen_ids:
            raise AccountsError(f"account {account.apple_id}: apple_id appears twice")
        if account.dsid in seen_dsids:
            raise AccountsError(f"account {account.apple_id}: dsid {account.dsid} appears twice")
        seen_ids.add(account.apple_id.lower())
        seen_dsids.add(account.dsid)


def _require(entry: dict[str, Any], key: str, where: str, kind: type) -> Any:
    if key not in entry:
        raise AccountsError(f"{where}: missing key {key!r}")
    value = entry[key]
    if not isinstance(value, kind):
        raise AccountsError(f"{where}: {key!r} must be a {kind.__name__}")
    return value


def _parse_account(entry: dict[str, Any], index: int) -> Account:
    where = f"account #{index + 1}"
    apple_id = _require(entry, "apple_id", where, str)
    where = f"account {apple_id}"
    dsid = str(_require(entry, "dsid", where, (str, int)))  # type: ignore[arg-type]
    if not dsid.isdigit():
        raise AccountsError(f"{where}: 'dsid' must be all digits (iCloud DSIDs are numeric), got {dsid!r}")
    passwords = _require(entry, "app_passwords", where, list)
    for password in passwords:
        if not isinstance(password, str) or not APP_PASSWORD_PATTERN.match(password):
            raise AccountsError(
                f"{where}: app password {password!r} is not of the form xxxx-xxxx-xxxx-xxxx "
                "(lowercase letters)"
            )
    partition = entry.get("partition", 44)
    if not isinstance(partition, int) or partition < 1:
        raise AccountsError(f"{where}: 'partition' must be a positive integer")
    extra = entry.get("extra_addresses", [])
    if not isinstance(extra, list) or not all(isinstance(item, str) for item in extra):
        raise AccountsError(f"{where}: 'extra_addresses' must be a list of strings")
    calendars = tuple(
        _parse_calendar(calendar, f"{where}, calendar #{number + 1}", apple_id)
        for number, calendar in enumerate(entry.get("calendar", []))
    )
    ids = [calendar.id for calendar in calendars]
    if len(set(ids)) != len(ids):
        raise AccountsError(f"{where}: calendar ids must be unique")
    if any(calendar_id in SPECIAL_COLLECTIONS for calendar_id in ids):
        raise AccountsError(f"{where}: {', '.join(SPECIAL_COLLECTIONS)} are created automatically")
    main_password = entry.get("main_password")
    if main_password is not None and not isinstance(main_password, str):
        raise AccountsError(f"{where}: 'main_password' must be a string")
    return Account(
        apple_id=apple_id,
        dsid=dsid,
        app_passwords=tuple(passwords),
        full_name=str(entry.get("full_name", apple_id.split("@")[0])),
        main_password=main_password,
        partition=partition,
        extra_addresses=tuple(extra),
        calendars=calendars,
    )


def _parse_calendar(entry: dict[str, Any], where: str, apple_id: str) -> CalendarSpec:
    access = entry.get("access", "owner")
    if access not in ACCESS_VALUES:
        raise AccountsError(f"{where}: 'access' must be one of {', '.join(ACCESS_VALUES)}")
    if "id" in entry:
        calendar_id = _require(entry, "id", where, str)
    elif access in ("read-only", "read-write"):
        # Calendars shared to a user get a 64-hex ID in iCloud; derive a stable one from the display name.
        calendar_id = shared_calendar_id(apple_id, _require(entry, "displayname", where, str))
    else:
        raise AccountsError(f"{where}: missing key 'id'")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9@._-]*", calendar_id):
        raise AccountsError(
            f"{where}: 'id' {calendar_id!r} may only hold letters, digits, '@', '.', '_', '-'"
        )
    component = entry.get("component", "VEVENT")
    if component not in COMPONENTS:
        raise AccountsError(f"{where}: 'component' must be one of {', '.join(COMPONENTS)} (one per calendar)")
    color = entry.get("color", "#1BADF8FF")
    if not isinstance(color, str) or not re.fullmatch(r"#[0-9A-Fa-f]{8}", color):
        raise AccountsError(f"{where}: 'color' must be #RRGGBBAA")
    source = entry.get("source")
    if access == "subscribed" and not isinstance(source, str):
        raise AccountsError(f"{where}: a subscribed calendar needs 'source' (the feed URL)")
    return CalendarSpec(
        id=calendar_id,
        displayname=str(entry.get("displayname", calendar_id)),
        component=component,
        color=color.upper(),
        access=access,
        source=source,
        order=int(entry.get("order", 0)),
    )
