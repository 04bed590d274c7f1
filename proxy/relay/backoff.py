"""Exponential back-off with jitter that never undercuts the server's Retry-After (pure).

iCloud's Retry-After is "routinely shorter than the throttle it is reporting" (keeper.sh, see
docs/icloud.md §6), so the wait is the longer of our own back-off and the server's hint. "Equal jitter"
(AWS Architecture Blog, "Exponential Backoff And Jitter", 2015) keeps half of each step fixed and randomises
the other half, so retries of many links spread out without ever collapsing to zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: how many times the announced Retry-After a throttled link waits at least
RETRY_AFTER_FACTOR = 2.0


@dataclass
class Backoff:
    minimum: float
    maximum: float
    failures: int = 0

    def next_delay(self, retry_after: float | None, random: Callable[[], float]) -> float:
        """Seconds to wait after one more failure. ``random`` returns a float in [0, 1)."""
        step = min(self.maximum, self.minimum * 2**self.failures)
        self.failures += 1
        delay = step / 2 + step / 2 * random()
        # Retrying exactly at Retry-After trips iCloud's throttle again (its back-off outlasts what it
        # announces; the emulator's budget_backoff_seconds), so a throttled link waits at least twice as long.
        return max(delay, RETRY_AFTER_FACTOR * (retry_after or 0.0))

    def succeeded(self) -> None:
        self.failures = 0
