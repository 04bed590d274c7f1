"""The calendars that make up a user's availability, and how fresh each one is (pure)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from proxy.model import CALENDAR_KIND_PROP, MIRROR_POLICIES_PROP, MIRROR_ROLE_PROP


@dataclass(frozen=True)
class SourceFreshness:
    """What the relay knows about a mirror's last pull from iCloud."""

    last_success: datetime | None
    stale: bool = False  # the relay's own verdict (e.g. the link needs reconnecting)
    error: str | None = None  # the last failure, for the response


#: ``(user) -> {collection path: freshness}``, provided by the relay; absent paths have no sync information.
FreshnessProvider = Callable[[str], Mapping[str, SourceFreshness]]


@dataclass(frozen=True)
class SourceStatus:
    """A calendar as reported with an availability answer."""

    path: str
    mirror_role: str | None  # None for a booking calendar (local, always fresh)
    calendar_kind: str | None
    last_success: datetime | None
    stale: bool
    error: str | None
    #: a mirror's availability policies (all-day events, travel time, invitations), as the link set them
    policies: Mapping[str, Any] | None = None
    #: the answer reaches beyond the relay's sync window, where this mirror may lack iCloud's events
    beyond_sync_window: bool = False


def source_status(
    path: str,
    props: Mapping[str, str],
    freshness: SourceFreshness | None,
    have_relay_info: bool,
    now: datetime,
    stale_after: timedelta,
    beyond_window: bool = False,
) -> SourceStatus:
    """Judge one calendar's freshness.

    A booking calendar lives here, so it is always fresh. A mirror is stale when the relay says so, when its
    last successful pull is older than ``stale_after``, or when the relay reports on this user but has never
    pulled it. Without any relay information (no relay configured) a mirror cannot be judged and is reported
    with ``last_success`` null and not stale. Stale sources are always still used: never "free" by failure.
    """
    role = props.get(MIRROR_ROLE_PROP)
    kind = props.get(CALENDAR_KIND_PROP)
    if role is None:
        return SourceStatus(path, None, kind, None, False, None)
    chosen = _policies(props.get(MIRROR_POLICIES_PROP))
    beyond = beyond_window and have_relay_info  # without a relay, nothing is known of its window either
    if freshness is None:
        never = "never synced from iCloud" if have_relay_info else None
        return SourceStatus(path, role, kind, None, have_relay_info, never, chosen, beyond)
    too_old = freshness.last_success is None or now - freshness.last_success > stale_after
    return SourceStatus(path, role, kind, freshness.last_success, freshness.stale or too_old, freshness.error,
                        chosen, beyond)


def _policies(text: str | None) -> Mapping[str, Any] | None:
    """The mirror's policies property (written by the link service; absent on mirrors made before it)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
