"""Linking operations with their I/O: the upstream server, the CalDAV engine (mirrors) and the state DB.

Used by the JSON API inside the server and by the CLI in its own process; both end in the state database,
which the running relay watches, so a new or changed link takes effect without a restart.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from proxy.config import Settings
from proxy.engine import Engine
from proxy.links import rules
from proxy.links.rules import LinkError
from proxy.model import (
    MIRROR_BLOCKS_PROP,
    MIRROR_ROLE_PROP,
    MIRROR_SOURCE_PROP,
    CalendarKind,
)
from proxy.relay import policies
from proxy.relay.progress import import_report
from proxy.secretbox import SecretBox
from proxy.state import AsyncState, Link, LinkCalendar, StateDB
from proxy.upstream import Account, AuthenticationFailed, RemoteCalendar, UpstreamClient, UpstreamError

logger = logging.getLogger(__name__)

ClientFactory = Callable[[str, str, str], UpstreamClient]


@dataclass(frozen=True)
class LinkRequest:
    user: str
    apple_id: str
    app_password: str = field(repr=False)
    server_url: str
    primary: str
    conflicts: tuple[str, ...] = ()
    primary_blocks: bool = True
    mode: str = "two-way"
    deletions: str = "keep"
    calendars: tuple[str, ...] = ()  # booking calendars to integrate; empty = all of the integrating kinds
    #: policy changes from the defaults (proxy.relay.policies), e.g. {"attendees": "schedule-agent-client"}
    policies: dict[str, Any] = field(default_factory=dict)


class LinkService:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        state: AsyncState,
        box: SecretBox,
        client_factory: ClientFactory = UpstreamClient,
        on_change: Callable[[str], None] = lambda user: None,
        default_server_url: Callable[[], str] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.state = state
        self.box = box
        self.client_factory = client_factory
        self.on_change = on_change  # told the user whose link changed (the relay reloads it)
        #: Where a link goes when the request names no server (the embedded emulator knows its port late).
        self.default_server_url = default_server_url or (lambda: settings.default_server_url)

    # -- reading the account ----------------------------------------------------------------------------

    async def discover(self, apple_id: str, app_password: str, server_url: str) -> Account:
        """The account's calendars, verifying the credentials (rule 2). Errors say what to do."""
        try:
            async with self.client_factory(server_url, apple_id, app_password) as client:
                return await client.discover()
        except AuthenticationFailed:
            raise LinkError("credentials_rejected", rules.CREDENTIALS_REJECTED) from None
        except UpstreamError as error:
            message = f"could not read the calendars at {server_url}: {error}"
            raise LinkError("upstream_unavailable", message, 502) from None

    async def credentials(self, user: str) -> tuple[str, str, str]:
        """(apple_id, app_password, server_url) of an existing link."""
        link = await self.state.call(self.state.db.link, user)
        if link is None:
            raise LinkError("not_linked", f"{user} has no iCloud link; link it first (calrelay link {user} ...)", 404)
        return link.apple_id, self.box.decrypt(link.secret), link.server_url

    # -- changing links ---------------------------------------------------------------------------------

    async def link(self, request: LinkRequest) -> tuple[Link, list[LinkCalendar], list[str]]:
        """Link (or re-link) a user; returns the link, its calendars and notes for the person linking."""
        rules.check_request(request.apple_id, request.app_password, request.server_url, request.mode, request.deletions)
        try:
            defaults = policies.parse(dataclasses.asdict(self.settings.policies))
            chosen_policies = policies.parse(request.policies, defaults)
        except ValueError as error:
            raise LinkError("invalid_policy", str(error)) from None
        users = await self.engine.call(self.engine.users.records)
        if request.user not in users:
            message = f"there is no calrelay user {request.user!r}; add one with `calrelay users add`"
            raise LinkError("unknown_user", message, 404)
        # One iCloud account, one calrelay user: a second user's mirrors would import the first user's
        # appointments (already in that iCloud calendar) as blocked time, and both would push into it.
        for other in await self.state.call(self.state.db.links):
            if other.user != request.user and other.apple_id.casefold() == request.apple_id.casefold():
                raise LinkError(
                    "apple_id_in_use",
                    f"the Apple ID {request.apple_id} is already linked to calrelay user {other.user!r}; one iCloud "
                    f"account serves one user. Unlink it there first (calrelay unlink {other.user}).",
                    409,
                )
        local = {c.path: c.props for c in await self.engine.call(self.engine.list_calendars, request.user)}
        default_kind = CalendarKind.parse(self.settings.storage.default_calendar_kind)
        booking = rules.booking_calendars(request.calendars, local, request.user, default_kind)
        account = await self.discover(request.apple_id, request.app_password, request.server_url)
        chosen = rules.choose_calendars(account, request.primary, request.conflicts, request.primary_blocks)
        notes = rules.primary_named_as_conflict(account, request.primary, request.conflicts)

        previous = {c.remote_url: c for c in await self.state.call(self.state.db.link_calendars, request.user)}
        taken = {path for path in local if path not in {c.mirror_path for c in previous.values()}}
        linked = []
        for choice in chosen:
            kept = previous.get(choice.remote.url)
            path = kept.mirror_path if kept else rules.mirror_path(request.user, choice.remote, taken)
            taken.add(path)
            linked.append(LinkCalendar(
                user=request.user, remote_url=choice.remote.url, remote_name=choice.remote.name,
                display_name=choice.remote.display_name, role=choice.role.value, blocks=choice.blocks,
                mirror_path=path,
            ))
            await self.engine.call(self.engine.ensure_mirror, path, mirror_props(choice.remote, choice.role.value,
                                                                                 choice.blocks))
        for gone in set(previous) - {c.remote_url for c in linked}:
            await self.engine.call(self.engine.delete_collection, previous[gone].mirror_path)

        now = time.time()
        existing = await self.state.call(self.state.db.link, request.user)
        link = Link(
            user=request.user, apple_id=request.apple_id, server_url=request.server_url,
            secret=self.box.encrypt(request.app_password), mode=request.mode, deletions=request.deletions,
            calendars=",".join(booking), state="connected", last_error=None, last_error_at=None,
            created_at=existing.created_at if existing else now, updated_at=now,
            policies=json.dumps(chosen_policies.as_dict()),
        )
        if chosen_policies.attendees is policies.AttendeeMode.SCHEDULE_AGENT_CLIENT:
            logger.warning("%s keeps attendees as ATTENDEEs with SCHEDULE-AGENT=CLIENT: iCloud still e-mails "
                           "attendees it hosts (@icloud.com, @me.com, @mac.com)", request.user)
        await self.state.call(self.state.db.save_link, link, linked)
        logger.info("linked %s to %s at %s (primary %s, %d conflict calendars, %s)", request.user,
                    request.apple_id, request.server_url, chosen[0].remote.name, len(chosen) - 1, request.mode)
        self.on_change(request.user)
        return link, linked, notes

    async def unlink(self, user: str) -> bool:
        """Forget the link and remove its mirrors (their blocked time goes with them). What calrelay already
        wrote to iCloud stays there."""
        for calendar in await self.state.call(self.state.db.link_calendars, user):
            await self.engine.call(self.engine.delete_collection, calendar.mirror_path)
        removed = await self.state.call(self.state.db.delete_link, user)
        if removed:
            logger.info("unlinked %s", user)
            self.on_change(user)
        return removed


def mirror_props(calendar: RemoteCalendar, role: str, blocks: bool) -> dict[str, str]:
    props = {
        "D:displayname": f"iCloud: {calendar.display_name}",
        MIRROR_ROLE_PROP: role,
        MIRROR_SOURCE_PROP: calendar.url,
        MIRROR_BLOCKS_PROP: "true" if blocks else "false",
    }
    if calendar.color:
        props["ICAL:calendar-color"] = calendar.color
    return props


def _when(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds") if timestamp else None


def link_status(db: StateDB, user: str) -> dict[str, Any]:
    """What ``calrelay status`` and ``GET /api/v1/users/{user}/status`` report. Never includes the secret."""
    link = db.link(user)
    if link is None:
        return {"user": user, "linked": False}
    running = db.progress(user)
    lease = db.lease(user)
    holder = lease.live_holder(time.time()) if lease is not None else None
    return {
        "user": user,
        "linked": True,
        # Which instance relays the link, since when, with which fencing token (None: nobody right now).
        "relayed_by": {"instance": holder, "since": _when(lease.acquired_at), "token": lease.token}
        if lease is not None and holder is not None else None,
        "apple_id": link.apple_id,
        "server": link.server_url,
        "mode": link.mode,
        "icloud_deletions": link.deletions,
        "policies": json.loads(link.policies),
        "booking_calendars": sorted(link.booking_calendars) or "all of the integrating kinds",
        "state": link.state,
        "last_error": link.last_error,
        "last_error_at": _when(link.last_error_at),
        "calendars": [
            {
                "name": c.remote_name,
                "display_name": c.display_name,
                "url": c.remote_url,
                "role": c.role,
                "blocks_availability": c.blocks,
                "mirror": c.mirror_path,
                "last_pull": _when(c.last_success_at),
                "last_attempt": _when(c.last_attempt_at),
                "token_state": c.token_state,
                "last_error": c.last_error,
                # A pull running now (an import): fetched/written of total, rate and time left.
                "import": import_report(**{k: v for k, v in running[c.remote_url].items() if k != "updated_at"},
                                        now=time.time()) if c.remote_url in running else None,
            }
            for c in db.link_calendars(user)
        ],
        "pending": [
            {"uid": p.uid, "action": p.action, "reason": p.reason, "attempts": p.attempts, "since": _when(p.first_at)}
            for p in db.pending(user)
        ],
    }


def calendar_listing(account: Account) -> list[dict[str, Any]]:
    """``calrelay link --list`` and the API: what can be linked, and how."""
    return [
        {
            "name": c.name,
            "display_name": c.display_name,
            "color": c.color,
            "components": sorted(c.components),
            "writable": c.writable,
            "shared": c.shared,
            "subscribed": c.subscribed,
            "can_be_primary": c.writable and not c.subscribed and "VEVENT" in c.components,
            "can_be_conflict": not c.subscribed and "VEVENT" in c.components,
        }
        for c in account.calendars
    ]
