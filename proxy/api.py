"""Shared pieces of the JSON API under ``/api/v1/``: error objects and access checks."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.auth import principal_of
from proxy.keys import AUTHENTICATOR


def json_error(status: int, message: str, **details: Any) -> web.Response:
    """``{"error": {"status": …, "message": …, …}}`` with the given HTTP status."""
    return web.json_response({"error": {"status": status, "message": message, **details}}, status=status)


def require_access(request: web.Request, user: str) -> web.Response | None:
    """None when the caller may act for ``user`` and ``user`` exists; otherwise the 403 or 404 to return.

    An unknown user is a 404 (after the access check, so a person learns nothing about other names): a typo
    in a user name must not look like a free calendar or an unlinked account."""
    principal = principal_of(request)
    if not principal.may_access(user):
        return json_error(
            403, f"user {principal.name!r} may not access {user!r}: use your own name or a service account"
        )
    if user not in request.app[AUTHENTICATOR].users.records():
        return json_error(404, f"there is no calrelay user {user!r}; add one with `calrelay users add`",
                          code="unknown_user")
    return None
