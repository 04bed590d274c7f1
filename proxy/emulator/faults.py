"""Fault injection: the ways iCloud misbehaves that a relay must survive.

The switches live in :class:`FaultSettings`; :class:`FaultState` turns them into a decision per request.
They are changed through the control API (``POST /_emulator/faults``) or ``calrelay emulator faults``.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class FaultSettings:
    #: N > 0 arms a throttle: from the first request after it is set, every request gets
    #: ``throttle_status`` with ``Retry-After: retry_after`` for N seconds (iCloud's Retry-After is
    #: shorter than the back-off it really wants)
    throttle_seconds: float = 0.0
    throttle_status: int = 503
    retry_after: int = 1
    #: requests per account per rolling minute; beyond it, ``throttle_status`` + Retry-After (0: no budget)
    budget_per_minute: int = 0
    #: once an account exceeds its budget it is refused for this long, however short the Retry-After it is
    #: told: retrying exactly at Retry-After trips it again (iCloud's back-off outlasts what it announces)
    budget_backoff_seconds: float = 10.0
    #: share (0..1) of requests answered with a random 500 or 502
    error_rate: float = 0.0
    #: share (0..1) of requests whose connection is dropped without a response
    drop_rate: float = 0.0
    #: added to every request before it is handled
    latency_ms: int = 0
    #: before every request, every object of the account gets a new ETag (as if iCloud or a sharer touched it)
    etag_churn: bool = False
    #: a new object is invisible to REPORT, multiget and Depth-1 PROPFIND for this long after its PUT
    visibility_lag_ms: int = 0
    #: every app-specific password is refused (as after an Apple ID password reset)
    revoke_app_passwords: bool = False


_RATE_KEYS = ("error_rate", "drop_rate")


def _validated(name: str, value: Any, current: Any) -> Any:
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    if name in _RATE_KEYS and value > 1:
        raise ValueError(f"{name} is a share between 0 and 1")
    if name == "throttle_status" and value not in (429, 503):
        raise ValueError("throttle_status must be 429 or 503")
    return type(current)(value)


@dataclass(frozen=True)
class Refusal:
    """What the fault layer does instead of handling the request."""

    #: "throttle", "error" or "drop"
    kind: str
    status: int = 0
    retry_after: int | None = None


@dataclass
class FaultState:
    settings: FaultSettings = field(default_factory=FaultSettings)
    throttle_until: float | None = None
    random: random.Random = field(default_factory=random.Random)
    _budget: dict[str, deque[float]] = field(default_factory=dict)
    #: account → monotonic time until which its budget refusal lasts
    _penalty: dict[str, float] = field(default_factory=dict)

    def update(self, changes: dict[str, Any]) -> FaultSettings:
        """Apply a partial update; unknown keys or bad values raise ValueError and change nothing."""
        known = {item.name: getattr(self.settings, item.name) for item in fields(self.settings)}
        validated: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown fault switch {key!r}; known: {', '.join(known)}")
            validated[key] = _validated(key, value, known[key])
        for key, value in validated.items():
            setattr(self.settings, key, value)
        if "throttle_seconds" in validated:
            # A new throttle (or switching it off) restarts the window at the next request.
            self.throttle_until = None
        if "budget_per_minute" in validated:
            self._budget.clear()
            self._penalty.clear()
        return self.settings

    def reset(self) -> FaultSettings:
        self.settings = FaultSettings()
        self.throttle_until = None
        self._budget.clear()
        self._penalty.clear()
        return self.settings

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self.settings)
        now = time.monotonic()
        result["throttle_remaining_seconds"] = (
            round(self.throttle_until - now, 3) if self.throttle_until and self.throttle_until > now else 0
        )
        return result

    def check(self, account_key: str | None) -> Refusal | None:
        """Decide whether this request is throttled, failed or dropped (latency is applied by the caller)."""
        settings = self.settings
        now = time.monotonic()
        if settings.throttle_seconds > 0:
            if self.throttle_until is None:
                self.throttle_until = now + settings.throttle_seconds
            if now < self.throttle_until:
                return Refusal("throttle", settings.throttle_status, settings.retry_after)
        if settings.budget_per_minute > 0 and account_key:
            if now < self._penalty.get(account_key, 0.0):
                return Refusal("throttle", settings.throttle_status, settings.retry_after)
            window = self._budget.setdefault(account_key, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= settings.budget_per_minute:
                self._penalty[account_key] = now + max(settings.budget_backoff_seconds, settings.retry_after)
                # The back-off served, the account starts a fresh minute.
                window.clear()
                return Refusal("throttle", settings.throttle_status, settings.retry_after)
            window.append(now)
        if settings.drop_rate and self.random.random() < settings.drop_rate:
            return Refusal("drop")
        if settings.error_rate and self.random.random() < settings.error_rate:
            return Refusal("error", self.random.choice((500, 502)))
        return None
