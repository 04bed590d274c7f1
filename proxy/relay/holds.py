"""One request budget per Apple ID: when iCloud throttles an account, every link using it waits (pure state).

iCloud throttles per Apple ID, not per connection; two calrelay users linked to the same account (a shared
team calendar, a user linked twice) would otherwise each retry and keep the account throttled.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def account_key(server_url: str, apple_id: str) -> str:
    return f"{server_url.rstrip('/').lower()} {apple_id.lower()}"


@dataclass
class AccountHolds:
    #: account key -> monotonic time before which no link of that account sends a request
    _until: dict[str, float] = field(default_factory=dict)

    def hold(self, key: str, until: float) -> None:
        """Extend the account's hold to ``until`` (a shorter hold never shortens a longer one)."""
        self._until[key] = max(until, self._until.get(key, 0.0))

    def until(self, key: str) -> float:
        return self._until.get(key, 0.0)
