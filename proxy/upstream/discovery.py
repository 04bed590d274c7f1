"""Discovery answers kept for a while (default 15 minutes), so that nobody asks iCloud for them every time.

Discovery is three PROPFINDs (principal, home set, calendar list). The relay checks on every pull pass that
the linked calendars are still where it writes and reads (a moved home, a deleted calendar), and linking asks
for the same listing twice (``icloud-calendars``, then ``link``); iCloud's request budget is per Apple ID, so
each of those would otherwise cost three requests of it. An answer is forgotten when it is older than the
time to live, and at once when the account answers 401 or 404 (the credentials changed, the home or a
calendar moved) or its link changes.

Entries are keyed by server, Apple ID and a keyed digest of the password: a listing asked for with another
password is never answered from the cache, since asking verifies the credentials. The digest key is random
per process, and nothing here is written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proxy.upstream.models import Account

log = logging.getLogger(__name__)

#: The time to live of a discovery answer (the issue's "15 minutes"; ``[upstream] discovery_ttl``).
DEFAULT_TTL = 15 * 60.0


def account_id(server_url: str, apple_id: str) -> str:
    """One iCloud account on one server, as the cache (and the relay's throttling holds) name it."""
    return f"{server_url.rstrip('/').lower()} {apple_id.lower()}"


@dataclass
class DiscoveryCache:
    ttl: float = DEFAULT_TTL
    #: wall-clock seconds: entries are also compared with a link's last change (``not_before``)
    clock: Callable[[], float] = time.time
    #: account id -> password digest -> (when discovered, the answer)
    _entries: dict[str, dict[bytes, tuple[float, Account]]] = field(default_factory=dict)
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def _digest(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode(), hashlib.sha256).digest()

    def get(self, server_url: str, apple_id: str, password: str, not_before: float = 0.0) -> Account | None:
        """The account's discovery, if one younger than the time to live (and made at ``not_before`` or later)
        was made with this password."""
        entry = self._entries.get(account_id(server_url, apple_id), {}).get(self._digest(password))
        if entry is None or entry[0] < not_before or self.clock() - entry[0] >= self.ttl:
            return None
        return entry[1]

    def put(self, server_url: str, apple_id: str, password: str, account: Account) -> None:
        # One password per account is current: an answer for an older password is dropped with it.
        self._entries[account_id(server_url, apple_id)] = {self._digest(password): (self.clock(), account)}

    def invalidate(self, server_url: str, apple_id: str, why: str) -> None:
        if self._entries.pop(account_id(server_url, apple_id), None) is not None:
            log.debug("discovery of %s at %s forgotten: %s", apple_id, server_url, why)

    async def discover(
        self, server_url: str, apple_id: str, password: str, ask: Callable[[], Awaitable[Account]]
    ) -> Account:
        """The cached answer, or ``ask()``'s (which is then cached; a failure is not)."""
        cached = self.get(server_url, apple_id, password)
        if cached is not None:
            return cached
        account = await ask()
        self.put(server_url, apple_id, password, account)
        return account
