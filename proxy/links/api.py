"""The link operations for the CRM: JSON under ``/api/v1/users/{user}/``.

- ``PUT    …/link``               link (or re-link) the user's iCloud account; verifies the credentials
- ``GET    …/link``               the link and its state (same as ``…/status``)
- ``DELETE …/link``               unlink
- ``GET    …/status``             link state, calendars with their last pull, and pending items with reasons
- ``POST   …/icloud-calendars``   list an account's calendars (credentials in the body, or the stored link's)
- ``POST   …/sync``               pull from iCloud now (and push whatever is pending), not at the next poll
- ``GET    …/policies``           the link's policies and each linked calendar's (its own and in effect)
- ``PATCH  …/policies``           change some of them, without linking again (docs/relay.md, "Policies")

A user may act on themself; a service account on anyone. Errors are ``{"error": {"status", "code",
"message"}}``. The app-specific password is accepted in request bodies only and never returned.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from proxy.api import json_error, require_access
from proxy.keys import RELAY
from proxy.links.rules import LinkError
from proxy.links.service import LinkRequest, LinkService, calendar_listing, link_status

LINKS = web.AppKey("calrelay.links", LinkService)

_FIELDS = {
    "apple_id": str, "app_password": str, "server": str, "primary": str, "conflicts": list,
    "primary_blocks": bool, "mode": str, "icloud_deletions": str, "calendars": list, "policies": dict,
    "calendar_policies": dict,
}


def setup_routes(app: web.Application) -> None:
    app.router.add_put("/api/v1/users/{user}/link", put_link)
    app.router.add_get("/api/v1/users/{user}/link", get_status)
    app.router.add_delete("/api/v1/users/{user}/link", delete_link)
    app.router.add_get("/api/v1/users/{user}/status", get_status)
    app.router.add_post("/api/v1/users/{user}/icloud-calendars", list_icloud_calendars)
    app.router.add_post("/api/v1/users/{user}/sync", sync_now)
    app.router.add_get("/api/v1/users/{user}/policies", get_policies)
    app.router.add_patch("/api/v1/users/{user}/policies", patch_policies)


def _error(error: LinkError) -> web.Response:
    return json_error(error.status, str(error), code=error.code)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if await request.read() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LinkError("invalid_json", f"the request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise LinkError("invalid_json", "the request body must be a JSON object")
    for key, value in body.items():
        expected = _FIELDS.get(key)
        if expected is None:
            raise LinkError("unknown_field", f"unknown field {key!r}; fields: {', '.join(_FIELDS)}")
        if expected is dict and isinstance(value, dict):
            continue  # the policies: checked, with messages, by proxy.relay.policies.parse
        if not isinstance(value, expected) or (expected is list and not all(isinstance(v, str) for v in value)):
            kind = "a list of strings" if expected is list else expected.__name__
            raise LinkError("invalid_field", f"{key} must be {kind}")
    return body


async def put_link(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    try:
        body = await _body(request)
        for required in ("apple_id", "app_password", "primary"):
            if not body.get(required):
                raise LinkError("missing_field", f"{required} is required")
        _, _, notes = await request.app[LINKS].link(LinkRequest(
            user=user,
            apple_id=body["apple_id"],
            app_password=body["app_password"],
            server_url=body.get("server") or request.app[LINKS].default_server_url(),
            primary=body["primary"],
            conflicts=tuple(body.get("conflicts", ())),
            primary_blocks=body.get("primary_blocks", True),
            mode=body.get("mode", "two-way"),
            deletions=body.get("icloud_deletions", "keep"),
            calendars=tuple(body.get("calendars", ())),
            policies=body.get("policies", {}),
            calendar_policies=body.get("calendar_policies", {}),
        ))
    except LinkError as error:
        return _error(error)
    service = request.app[LINKS]
    report = await service.state.call(link_status, service.state.db, user)
    return web.json_response({**report, "notes": notes} if notes else report, status=200)


async def get_status(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    service = request.app[LINKS]
    return web.json_response(await service.state.call(link_status, service.state.db, user))


async def delete_link(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    if not await request.app[LINKS].unlink(user):
        return json_error(404, f"{user} has no iCloud link", code="not_linked")
    return web.Response(status=204)


async def list_icloud_calendars(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    service = request.app[LINKS]
    try:
        body = await _body(request)
        if body.get("apple_id") or body.get("app_password"):
            credentials = (body.get("apple_id", ""), body.get("app_password", ""),
                           body.get("server") or service.default_server_url())
        else:
            credentials = await service.credentials(user)
        account = await service.discover(*credentials)
    except LinkError as error:
        return _error(error)
    return web.json_response({"calendars": calendar_listing(account)})


async def sync_now(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    if not request.app[RELAY].sync_now(user):
        return json_error(404, f"{user} has no iCloud link", code="not_linked")
    return web.json_response({"user": user, "sync": "started"}, status=202)


def _policies_json(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "user": report["user"],
        "policies": report["policies"],
        "calendars": {c["name"]: {"role": c["role"], "policies": c["policies"], "own_policies": c["own_policies"]}
                      for c in report["calendars"]},
    }


async def get_policies(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    service = request.app[LINKS]
    report = await service.state.call(link_status, service.state.db, user)
    if not report["linked"]:
        return json_error(404, f"{user} has no iCloud link", code="not_linked")
    return web.json_response(_policies_json(report))


async def patch_policies(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    service = request.app[LINKS]
    try:
        try:
            changes = await request.json() if await request.read() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LinkError("invalid_json", f"the request body is not valid JSON: {error}") from None
        await service.set_policies(user, changes)
    except LinkError as error:
        return _error(error)
    report = await service.state.call(link_status, service.state.db, user)
    return web.json_response(_policies_json(report))
