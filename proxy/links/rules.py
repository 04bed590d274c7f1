"""The linking rules, as pure functions (no I/O). Every refusal is a :class:`LinkError` with a message
that tells the user what to do."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from proxy.model import CALENDAR_KIND_PROP, MIRROR_ROLE_PROP, CalendarKind, MirrorRole
from proxy.upstream import Account, RemoteCalendar

APP_PASSWORD_PATTERN = re.compile(r"[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}")
ICLOUD_HOST_SUFFIXES = ("icloud.com", "icloud.com.cn")
MODES = ("two-way", "one-way")
DELETION_POLICIES = ("keep", "propagate")
CREDENTIALS_REJECTED = (
    "iCloud refused the credentials: use an app-specific password generated at appleid.apple.com "
    "(Sign-In and Security > App-Specific Passwords), not your Apple ID password"
)


class LinkError(Exception):
    """A link request that cannot be honoured. ``code`` is stable for programs, the message for people."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class ChosenCalendar:
    remote: RemoteCalendar
    role: MirrorRole
    blocks: bool  # whether its events block availability


def is_icloud(server_url: str) -> bool:
    host = (urlsplit(server_url).hostname or "").lower()
    return any(host == suffix or host.endswith("." + suffix) for suffix in ICLOUD_HOST_SUFFIXES)


def check_request(apple_id: str, app_password: str, server_url: str, mode: str, deletions: str) -> None:
    """What can be checked before talking to the server."""
    if not apple_id or "@" not in apple_id:
        raise LinkError("invalid_apple_id", f"the Apple ID must be an e-mail address, not {apple_id!r}")
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LinkError("invalid_server", f"the server must be an http(s) URL such as https://caldav.icloud.com/, "
                        f"not {server_url!r}")
    if is_icloud(server_url) and parts.scheme != "https":
        raise LinkError("invalid_server", "iCloud must be reached over https://")
    if is_icloud(server_url) and not APP_PASSWORD_PATTERN.fullmatch(app_password):
        raise LinkError(
            "invalid_app_password",
            "an iCloud app-specific password has 16 lowercase letters in the form xxxx-xxxx-xxxx-xxxx; "
            "generate one at appleid.apple.com (Sign-In and Security > App-Specific Passwords). "
            "Your Apple ID password does not work over CalDAV.",
        )
    if not app_password:
        raise LinkError("invalid_app_password", "the app-specific password is empty")
    if mode not in MODES:
        raise LinkError("invalid_mode", f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if deletions not in DELETION_POLICIES:
        raise LinkError(
            "invalid_deletions", f"icloud_deletions must be one of {', '.join(DELETION_POLICIES)}, not {deletions!r}"
        )


def describe(calendar: RemoteCalendar) -> str:
    traits = ["events" if "VEVENT" in calendar.components else "tasks"]
    if calendar.subscribed:
        traits.append("subscription")
    elif not calendar.writable:
        traits.append("read-only")
    if calendar.shared:
        traits.append("shared")
    return f"{calendar.name} ({calendar.display_name}: {', '.join(traits)})"


def find_calendar(account: Account, name: str) -> RemoteCalendar:
    """The calendar called ``name`` (its id or display name, case-insensitive), or a list of what exists."""
    wanted = name.strip().casefold()
    for calendar in account.calendars:
        if wanted in (calendar.name.casefold(), calendar.display_name.casefold()):
            return calendar
    available = "; ".join(describe(c) for c in account.calendars) or "none"
    raise LinkError("unknown_calendar", f"the iCloud account has no calendar {name!r}; it has: {available}", 404)


def _check_linkable(calendar: RemoteCalendar, as_what: str) -> None:
    if calendar.subscribed:
        raise LinkError(
            "subscription_calendar",
            f"{calendar.display_name!r} is a subscription (webcal) calendar; iCloud does not serve its events "
            f"over CalDAV, so it cannot be a {as_what} calendar. Pick one of your own calendars.",
        )
    if "VEVENT" not in calendar.components:
        raise LinkError(
            "not_an_event_calendar",
            f"{calendar.display_name!r} is a task list (Reminders), not an event calendar; it cannot be a "
            f"{as_what} calendar",
        )


def choose_calendars(
    account: Account, primary: str, conflicts: Sequence[str], primary_blocks: bool = True
) -> list[ChosenCalendar]:
    """Rules 3, 4 and 10: the primary must be a writable event calendar; conflicts may be read-only; no
    subscriptions or task lists. The primary is also a conflict calendar unless ``primary_blocks`` is off."""
    primary_calendar = find_calendar(account, primary)
    _check_linkable(primary_calendar, "primary")
    if not primary_calendar.writable:
        raise LinkError(
            "read_only_primary",
            f"{primary_calendar.display_name!r} is read-only in iCloud (a calendar shared with you without edit "
            "rights); calrelay must write appointments to the primary calendar. Pick a calendar you own and use "
            "this one as a conflict calendar.",
        )
    chosen = [ChosenCalendar(primary_calendar, MirrorRole.PRIMARY, primary_blocks)]
    for name in conflicts:
        calendar = find_calendar(account, name)
        if calendar.url == primary_calendar.url:
            if not primary_blocks:
                raise LinkError(
                    "contradictory_conflicts",
                    f"{name!r} is the primary calendar: it cannot both block availability (a conflict calendar) "
                    "and not block it (primary-not-conflict); drop one of the two",
                )
            continue  # naming the primary again only confirms that it blocks (see primary_named_as_conflict)
        _check_linkable(calendar, "conflict")
        if all(calendar.url != c.remote.url for c in chosen):
            chosen.append(ChosenCalendar(calendar, MirrorRole.CONFLICT, True))
    return chosen


def primary_named_as_conflict(account: Account, primary: str, conflicts: Sequence[str]) -> list[str]:
    """The notes to show when the primary calendar is also named as a conflict calendar: harmless (the
    primary blocks availability by default) but worth saying, since it is not counted as a conflict calendar."""
    primary_url = find_calendar(account, primary).url
    return [
        f"{name!r} is the primary calendar, which already blocks availability; it is not added again as a "
        "conflict calendar"
        for name in conflicts
        if find_calendar(account, name).url == primary_url
    ]


def mirror_path(user: str, calendar: RemoteCalendar, taken: Iterable[str] = ()) -> str:
    """``/<user>/icloud-<calendar id>/``, made safe for a path segment and unique among ``taken``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", calendar.name).strip("-").lower()[:48] or "calendar"
    path = f"/{user}/icloud-{slug}/"
    number = 2
    taken = set(taken)
    while path in taken:
        path = f"/{user}/icloud-{slug}-{number}/"
        number += 1
    return path


def booking_calendars(
    requested: Sequence[str], local: Mapping[str, Mapping[str, str]], user: str, default_kind: CalendarKind
) -> list[str]:
    """Rule 1: the booking calendars to integrate, as paths. ``local`` maps the user's collection paths to their
    props. Empty ``requested`` means every calendar of an integrating kind; naming a Simple calendar, a mirror
    or an unknown calendar is refused."""
    if not requested:
        return []
    chosen = []
    for name in requested:
        path = name if name.startswith("/") else f"/{user}/{name.strip('/')}/"
        if not path.endswith("/"):
            path += "/"
        props = local.get(path)
        if props is None or props.get(MIRROR_ROLE_PROP):
            names = ", ".join(sorted(p for p, v in local.items() if not v.get(MIRROR_ROLE_PROP))) or "none"
            raise LinkError("unknown_booking_calendar", f"{user} has no booking calendar {name!r}; they have: {names}",
                            404)
        kind = CalendarKind.parse(props.get(CALENDAR_KIND_PROP) or default_kind.value)
        if not kind.integrates:
            raise LinkError(
                "simple_calendar",
                f"{path} is a Simple calendar; iCloud integration is only for Round Robin, Collective, Class Booking "
                "and Service calendars. Change its calendar-kind or leave it out.",
            )
        chosen.append(path)
    return chosen
