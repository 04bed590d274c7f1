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
    MIRROR_POLICIES_PROP,
    MIRROR_ROLE_PROP,
    MIRROR_SOURCE_PROP,
    CalendarKind,
)
from proxy.relay import policies
from proxy.relay.progress import import_report
from proxy.secretbox import SecretBox
from proxy.state import REMIRROR, AsyncState, Link, LinkCalendar, StateDB
from proxy.upstream import Account, AuthenticationFailed, RemoteCalendar, UpstreamClient, UpstreamError
from proxy.upstream.discovery import DiscoveryCache

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
    #: iCloud calendar name -> the availability policies it sets for itself (proxy.relay.policies)
    calendar_policies: dict[str, Any] = field(default_factory=dict)


def checked_calendar_policies(raw: Any, linked: list[str]) -> dict[str, dict[str, Any]]:
    """The per-calendar policies of a request, checked: each names a linked calendar and only availability
    policies (errors say which and what to write instead)."""
    if not isinstance(raw, dict):
        raise LinkError("invalid_policy", 'calendar_policies must be an object: {"<calendar>": {"all_day": …}}')
    checked = {}
    for name, own in raw.items():
        if name not in linked:
            raise LinkError("invalid_policy", f"calendar_policies names {name!r}, which this link does not "
                            f"include; its calendars: {', '.join(linked)}")
        try:
            checked[name] = policies.check_calendar_overrides(name, own)
        except ValueError as error:
            raise LinkError("invalid_policy", str(error)) from None
    return {name: own for name, own in checked.items() if own}


def with_remirror(calendars: list[LinkCalendar], before: policies.PolicySet | None,
                  after: policies.PolicySet) -> list[LinkCalendar]:
    """Calendars whose availability policies change are marked to be mirrored again (state.REMIRROR)."""
    if before is None:
        return calendars
    return [dataclasses.replace(c, token_state=REMIRROR)
            if policies.availability(before.for_calendar(c.remote_name))
            != policies.availability(after.for_calendar(c.remote_name)) else c
            for c in calendars]


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
        discovery: DiscoveryCache | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.state = state
        self.box = box
        self.client_factory = client_factory
        self.on_change = on_change  # told the user whose link changed (the relay reloads it)
        #: Where a link goes when the request names no server (the embedded emulator knows its port late).
        self.default_server_url = default_server_url or (lambda: settings.default_server_url)
        #: discovery answers, shared with the relay of this process (proxy.upstream.discovery)
        self.discovery = discovery or DiscoveryCache(settings.upstream.discovery_ttl)

    # -- reading the account ----------------------------------------------------------------------------

    async def discover(self, apple_id: str, app_password: str, server_url: str, fresh: bool = False) -> Account:
        """The account's calendars, verifying the credentials (rule 2). Errors say what to do.

        An answer for the same credentials from the last 15 minutes is reused unless ``fresh``."""

        async def ask() -> Account:
            async with self.client_factory(server_url, apple_id, app_password) as client:
                return await client.discover()

        if fresh:
            self.discovery.invalidate(server_url, apple_id, "asked for a fresh listing")
        try:
            return await self.discovery.discover(server_url, apple_id, app_password, ask)
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
        if not isinstance(request.calendar_policies, dict):
            raise LinkError("invalid_policy", 'calendar_policies must be an object: {"<calendar>": {"all_day": …}}')
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
        try:
            chosen = rules.choose_calendars(account, request.primary, request.conflicts, request.primary_blocks)
        except LinkError:  # maybe made in iCloud since the listing was cached: look again before refusing
            account = await self.discover(request.apple_id, request.app_password, request.server_url, fresh=True)
            chosen = rules.choose_calendars(account, request.primary, request.conflicts, request.primary_blocks)
        notes = rules.primary_named_as_conflict(account, request.primary, request.conflicts)
        chosen_set = policies.PolicySet(chosen_policies, checked_calendar_policies(
            request.calendar_policies, [choice.remote.name for choice in chosen]))
        existing = await self.state.call(self.state.db.link, request.user)

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
            props = mirror_props(choice.remote, choice.role.value, choice.blocks,
                                 chosen_set.for_calendar(choice.remote.name))
            await self.engine.call(self.engine.ensure_mirror, path, props)
        for gone in set(previous) - {c.remote_url for c in linked}:
            await self.engine.call(self.engine.delete_collection, previous[gone].mirror_path)

        now = time.time()
        link = Link(
            user=request.user, apple_id=request.apple_id, server_url=request.server_url,
            secret=self.box.encrypt(request.app_password), mode=request.mode, deletions=request.deletions,
            calendars=",".join(booking), state="connected", last_error=None, last_error_at=None,
            created_at=existing.created_at if existing else now, updated_at=now,
            policies=chosen_set.as_json(),
        )
        linked = with_remirror(linked, policies.policy_set(existing.policies) if existing else None, chosen_set)
        if chosen_policies.attendees is policies.AttendeeMode.SCHEDULE_AGENT_CLIENT:
            logger.warning("%s keeps attendees as ATTENDEEs with SCHEDULE-AGENT=CLIENT: iCloud still e-mails "
                           "attendees it hosts (@icloud.com, @me.com, @mac.com)", request.user)
        await self.state.call(self.state.db.save_link, link, linked)
        # Made again after the link's change, so the relay's worker for it may use the answer (proxy.relay.locate).
        self.discovery.put(request.server_url, request.apple_id, request.app_password, account)
        logger.info("linked %s to %s at %s (primary %s, %d conflict calendars, %s)", request.user,
                    request.apple_id, request.server_url, chosen[0].remote.name, len(chosen) - 1, request.mode)
        self.on_change(request.user)
        return link, linked, notes

    async def set_policies(self, user: str, changes: Any) -> policies.PolicySet:
        """Change a link's policies without linking again (no password needed); returns them all.

        ``changes`` names only what changes: link policies (``"all_day": "never-busy"``), and under
        ``"calendars"`` a calendar's own (``{"home": {"all_day": "always-busy"}}``). ``null`` puts a value
        back: a link policy to the configured default, a calendar's to the link's, a calendar to all the link's.
        Calendars whose availability policies change are mirrored again by the relay's next pull.
        """
        link = await self.state.call(self.state.db.link, user)
        if link is None:
            raise LinkError("not_linked", f"{user} has no iCloud link; link it first (calrelay link {user} ...)", 404)
        if not isinstance(changes, dict):
            raise LinkError("invalid_json", "the request body must be a JSON object of policy changes")
        calendars = await self.state.call(self.state.db.link_calendars, user)
        before = policies.policy_set(link.policies)
        try:
            defaults = policies.parse(dataclasses.asdict(self.settings.policies)).as_dict()
            values = before.link.as_dict()
            for key, value in changes.items():
                if key != policies.CALENDARS_KEY:
                    values[key] = defaults.get(key) if value is None else value
            chosen = policies.parse(values)  # unknown keys and bad values are refused here, with the fix
        except ValueError as error:
            raise LinkError("invalid_policy", str(error)) from None
        own = {name: dict(values) for name, values in before.calendars.items()}
        asked = changes.get(policies.CALENDARS_KEY) or {}
        if not isinstance(asked, dict):
            raise LinkError("invalid_policy", 'calendars must be an object: {"<calendar>": {"all_day": …}}')
        for name, change in asked.items():
            if change is None:
                own.pop(name, None)
            elif isinstance(change, dict):
                merged = {**own.get(name, {}), **change}
                own[name] = {key: value for key, value in merged.items() if value is not None}
            else:
                own[name] = change  # refused below, with the calendar's name
        after = policies.PolicySet(chosen, checked_calendar_policies(own, [c.remote_name for c in calendars]))
        if after == before:
            return after
        if chosen.attendees is policies.AttendeeMode.SCHEDULE_AGENT_CLIENT:
            logger.warning("%s keeps attendees as ATTENDEEs with SCHEDULE-AGENT=CLIENT: iCloud still e-mails "
                           "attendees it hosts (@icloud.com, @me.com, @mac.com)", user)
        mirrors = {c.path: c.props for c in await self.engine.call(self.engine.list_calendars, user)}
        for calendar in calendars:
            props = dict(mirrors.get(calendar.mirror_path, {}))
            if props:
                effective = after.for_calendar(calendar.remote_name)
                props[MIRROR_POLICIES_PROP] = json.dumps(policies.availability(effective))
                await self.engine.call(self.engine.ensure_mirror, calendar.mirror_path, props)
        updated = dataclasses.replace(link, policies=after.as_json(), updated_at=time.time())
        await self.state.call(self.state.db.save_link, updated, with_remirror(calendars, before, after))
        logger.info("policies of %s changed: %s", user, after.as_json())
        self.on_change(user)
        return after

    async def unlink(self, user: str) -> bool:
        """Forget the link and remove its mirrors (their blocked time goes with them). What calrelay already
        wrote to iCloud stays there."""
        for calendar in await self.state.call(self.state.db.link_calendars, user):
            await self.engine.call(self.engine.delete_collection, calendar.mirror_path)
        link = await self.state.call(self.state.db.link, user)
        removed = await self.state.call(self.state.db.delete_link, user)
        if link is not None:
            self.discovery.invalidate(link.server_url, link.apple_id, "unlinked")
        if removed:
            logger.info("unlinked %s", user)
            self.on_change(user)
        return removed


def mirror_props(calendar: RemoteCalendar, role: str, blocks: bool,
                 chosen: policies.LinkPolicies | None = None) -> dict[str, str]:
    props = {
        "D:displayname": f"iCloud: {calendar.display_name}",
        MIRROR_ROLE_PROP: role,
        MIRROR_SOURCE_PROP: calendar.url,
        MIRROR_BLOCKS_PROP: "true" if blocks else "false",
        MIRROR_POLICIES_PROP: json.dumps(policies.availability(chosen or policies.LinkPolicies())),
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
    chosen = policies.policy_set(link.policies)
    return {
        "user": user,
        "linked": True,
        "apple_id": link.apple_id,
        "server": link.server_url,
        "mode": link.mode,
        "icloud_deletions": link.deletions,
        "policies": chosen.link.as_dict(),
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
                # What blocks availability in this calendar: its own policies, the link's for the rest.
                "policies": policies.availability(chosen.for_calendar(c.remote_name)),
                "own_policies": chosen.calendars.get(c.remote_name, {}),
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
