"""Where a link's iCloud calendars are now: discovery, cached, checked once per pull pass.

A link stores its calendars' URLs as they were when it was made. iCloud can move an account's home to
another partition host, and a user can delete or unshare a linked calendar; the relay notices both by
discovering the account, which costs three requests, so the answer comes from the process's
:class:`~proxy.upstream.discovery.DiscoveryCache` (15 minutes) while it still covers every linked calendar.
A cached answer made before the link last changed is not used (the link may name new calendars); a 401 or a
404 forgets it (:meth:`LinkLocator.forget`).

Only the host of a moved home is followed: iCloud's paths (``/<DSID>/calendars/<id>/``) name the account and
the calendar, and a calendar whose path is gone is reported missing, not guessed at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote, urljoin, urlsplit

from proxy.relay.gate import Gate
from proxy.upstream import Account
from proxy.upstream.discovery import DiscoveryCache

logger = logging.getLogger(__name__)


class Discoverable(Protocol):
    """The part of :class:`~proxy.upstream.UpstreamClient` that finds the account's calendars."""

    async def discover(self) -> Account: ...

    def use_home(self, url: str) -> None: ...


def calendar_path(url: str) -> str:
    """A calendar URL as compared: its decoded path with one trailing slash."""
    return unquote(urlsplit(url).path).rstrip("/") + "/"


def locate(account: Account, linked: list[str]) -> dict[str, str | None]:
    """linked calendar URL -> the URL to use now (on the home's current host), or None if it is gone (pure)."""
    found = {calendar_path(c.url): c.url for c in account.calendars}
    return {url: found.get(calendar_path(url)) for url in linked}


def missing_message(name: str) -> str:
    return (f"the iCloud calendar {name!r} is no longer in the account (deleted, or no longer shared with it); "
            "link the account again to choose its calendars")


@dataclass
class LinkLocator:
    """One worker's view of its account's discovery."""

    cache: DiscoveryCache
    server_url: str
    apple_id: str
    password: str = field(repr=False)
    #: wall time of the link's last change: cached answers from before it are not used
    since: float
    #: linked calendar URL -> where to send its requests now (absent: as linked)
    where: dict[str, str] = field(default_factory=dict)
    _own: Account | None = None  # the last answer this locator asked for itself

    async def locate(self, client: Discoverable, gate: Gate, linked: list[str]) -> dict[str, str | None]:
        """Where each linked calendar is: from the cache if it covers them all (or this locator asked for it
        itself: a calendar missing from a fresh answer is missing), else from a new discovery."""
        cached = self.cache.get(self.server_url, self.apple_id, self.password, not_before=self.since)
        if cached is not None and (cached is self._own or all(locate(cached, linked).values())):
            account = cached
        else:
            account = await gate.call(client.discover())
            self.cache.put(self.server_url, self.apple_id, self.password, account)
            self._own = account
            before = self.where.get(linked[0], linked[0]) if linked else None
            if before is not None and urljoin(before, "/") != urljoin(account.home_url, "/"):
                logger.info("the calendar home of %s is now at %s", self.apple_id, account.home_url)
        client.use_home(account.home_url)
        located = locate(account, linked)
        self.where = {url: now for url, now in located.items() if now is not None}
        return located

    def url(self, linked_url: str) -> str:
        return self.where.get(linked_url, linked_url)

    def forget(self, why: str) -> None:
        """The account answered 401 or 404: its discovery may be out of date."""
        self.cache.invalidate(self.server_url, self.apple_id, why)
        self._own = None
