"""Typed outcomes of a failed upstream request.

The relay decides on retries and back-off from the class alone: ``Throttled`` and ``TransientError`` are worth
retrying later, ``AuthenticationFailed`` needs the user, ``PreconditionFailed``/``NotFound`` need a re-read, and
``Rejected`` is permanent for that request. Messages name the method, the URL and the status, never credentials.
"""

from __future__ import annotations

import re

EXCERPT_LENGTH = 200


class UpstreamError(Exception):
    """Base class; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationFailed(UpstreamError):
    """401: wrong Apple ID or app-specific password, or the app passwords were revoked."""


class Throttled(UpstreamError):
    """429 or 503; ``retry_after`` is the server's Retry-After in seconds, if it sent one."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class TransientError(UpstreamError):
    """Other 5xx, timeouts, refused, reset or dropped connections: try again later."""


class PreconditionFailed(UpstreamError):
    """412 (stale If-Match, existing object on If-None-Match, iCloud's UID-in-another-calendar)."""


class NotFound(UpstreamError):
    """404 on GET, PUT-update or DELETE."""


class InvalidSyncToken(UpstreamError):
    """The server refused the sync token; fall back to a full listing."""


class Rejected(UpstreamError):
    """Any other 4xx: permanent for this request."""


class ResponseTooLarge(UpstreamError):
    """The answer was larger than the client reads (``[upstream] max_response_bytes``): it was not read further.
    Permanent for this request: asking again gets the same answer."""


_TAGS = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def excerpt(body: bytes | str | None) -> str:
    """A short, single-line excerpt of an error body (HTML tags dropped) for messages."""
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = _SPACE.sub(" ", _TAGS.sub(" ", text)).strip()
    return text if len(text) <= EXCERPT_LENGTH else text[: EXCERPT_LENGTH - 1] + "…"


def error_for_status(
    status: int, what: str, body: bytes | str | None = None, retry_after: float | None = None
) -> UpstreamError:
    """The exception for an unexpected status; ``what`` is e.g. ``"PUT /123/calendars/work/a.ics"``."""
    detail = excerpt(body)
    message = f"{what}: HTTP {status}" + (f" — {detail}" if detail else "")
    if status == 401:
        return AuthenticationFailed(
            f"{what}: HTTP 401 — the server refused the Apple ID / app-specific password "
            "(wrong, revoked, or the account password was used instead of an app-specific one)",
            status,
        )
    if status in (429, 503):
        return Throttled(message, status, retry_after)
    if status == 404:
        return NotFound(message, status)
    if status == 412:
        return PreconditionFailed(message, status)
    if status >= 500:
        return TransientError(message, status)
    if 400 <= status < 500:
        return Rejected(message, status)
    return UpstreamError(message, status)
