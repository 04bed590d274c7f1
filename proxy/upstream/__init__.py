"""The upstream CalDAV client: how the relay talks to iCloud (see ``docs/upstream.md``)."""

from proxy.upstream.client import UpstreamClient, normalise_etag
from proxy.upstream.errors import (
    AuthenticationFailed,
    InvalidSyncToken,
    NotFound,
    PreconditionFailed,
    Rejected,
    ResponseTooLarge,
    Throttled,
    TransientError,
    UpstreamError,
)
from proxy.upstream.models import Account, Changes, RemoteCalendar, RemoteObject

__all__ = [
    "Account",
    "AuthenticationFailed",
    "Changes",
    "InvalidSyncToken",
    "NotFound",
    "PreconditionFailed",
    "Rejected",
    "RemoteCalendar",
    "RemoteObject",
    "ResponseTooLarge",
    "Throttled",
    "TransientError",
    "UpstreamClient",
    "UpstreamError",
    "normalise_etag",
]
