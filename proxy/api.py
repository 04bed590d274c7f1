"""Shared pieces of the JSON API under ``/api/v1/``: error objects and access checks."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.auth import principal_of


def json_error(status: int, message: str, **details: Any) -> web.Response:
    """``{"error": {"status": …, "message": …, …}}`` with the given HTTP status."""
    return web.json_response({"error": {"status": status, "message": message, **details}}, status=status)


def require_access(request: web.Request, user: str) -> web.Response | None:
    """None when the caller may act for ``user``; otherwise the 403 error to return."""
    principal = principal_of(request)
    if principal.may_access(user):
        return None
    return json_error(403, f"user {principal.name!r} may not access {user!r}: use your own name or a service account")
