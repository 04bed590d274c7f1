"""One pass's upstream requests: the account's concurrency limit, and when a failure stops the pass.

Throttling, refused credentials, or a run of failures (an outage) stop the whole pass (:class:`StopPass`); a
single failed request fails only its item, which is retried with the next pass. Push and pull passes each
have their own gate and share the account's concurrency limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.upstream import AuthenticationFailed, Throttled, TransientError, UpstreamError

T = TypeVar("T")

#: Consecutive failed requests after which the upstream counts as down and the pass stops.
OUTAGE_STREAK = 5


class StopPass(Exception):
    """The upstream asked us to stop for now (throttled, failing, or credentials refused)."""

    def __init__(self, cause: UpstreamError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Gate:
    def __init__(self, limit: asyncio.Semaphore, before: Callable[[], Awaitable[None]] | None = None) -> None:
        self._limit = limit
        # Awaited before each request: the lease check and the Apple ID's shared budget (it may raise).
        self._before = before
        self.stop_reason: StopPass | None = None
        self.failed = 0  # items (push) or calendars (pull) that failed transiently in this pass
        self._streak = 0  # consecutive transient failures: an outage, not a glitch

    async def call(self, work: Awaitable[T]) -> T:
        if self.stop_reason is not None:
            work.close()  # type: ignore[attr-defined]
            raise self.stop_reason
        async with self._limit:
            if self.stop_reason is not None:
                work.close()  # type: ignore[attr-defined]
                raise self.stop_reason
            if self._before is not None:
                try:
                    await self._before()
                except BaseException:
                    work.close()  # type: ignore[attr-defined]
                    raise
            try:
                result = await work
            except (Throttled, AuthenticationFailed) as error:
                self.stop_reason = self.stop_reason or StopPass(error)
                raise self.stop_reason from error
            except TransientError as error:
                self._streak += 1
                if self._streak >= OUTAGE_STREAK:
                    self.stop_reason = self.stop_reason or StopPass(error)
                    raise self.stop_reason from error
                raise
            self._streak = 0
            return result

    def check(self) -> None:
        """Raise the pass's stop reason, if a request set one."""
        if self.stop_reason is not None:
            raise self.stop_reason


def waiting(cause: UpstreamError) -> str:
    """The pending reason shown while the link waits for the upstream."""
    if isinstance(cause, AuthenticationFailed):
        return "waiting: iCloud refused the credentials; link the account again"
    if isinstance(cause, Throttled):
        return f"waiting: iCloud is throttling requests ({cause})"
    return f"waiting: iCloud unavailable ({cause})"
