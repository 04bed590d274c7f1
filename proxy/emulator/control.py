"""The control API under ``/_emulator/`` on the discovery port: fault switches, behaviour options, the
invitation log, ETag churn and account listing.

It needs no iCloud credentials, so it only answers clients on the loopback interface.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any

from aiohttp import web

from proxy.emulator.context import EMULATOR, Emulator
from proxy.emulator.resources import home_path

log = logging.getLogger(__name__)

PREFIX = "/_emulator"


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


@web.middleware
async def loopback_only(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith(PREFIX + "/") and not _is_loopback(request.remote):
        return web.json_response({"error": "the control API only answers on loopback"}, status=403)
    return await handler(request)


async def _json_object(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        payload = await request.json()
    except json.JSONDecodeError as error:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"invalid JSON: {error}"}), content_type="application/json"
        ) from error
    if not isinstance(payload, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "expected a JSON object"}), content_type="application/json"
        )
    return payload


def _emulator(request: web.Request) -> Emulator:
    return request.app[EMULATOR]


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(_emulator(request).faults.as_dict())


async def set_faults(request: web.Request) -> web.Response:
    faults = _emulator(request).faults
    changes = await _json_object(request)
    try:
        faults.update(changes)
    except ValueError as error:
        return _bad_request(str(error))
    log.warning("emulator faults changed: %s", changes)
    return web.json_response(faults.as_dict())


async def reset_faults(request: web.Request) -> web.Response:
    faults = _emulator(request).faults
    faults.reset()
    log.warning("emulator faults cleared")
    return web.json_response(faults.as_dict())


async def get_options(request: web.Request) -> web.Response:
    return web.json_response(_emulator(request).options.as_dict())


async def set_options(request: web.Request) -> web.Response:
    options = _emulator(request).options
    try:
        options.update(await _json_object(request))
    except ValueError as error:
        return _bad_request(str(error))
    return web.json_response(options.as_dict())


async def get_mail(request: web.Request) -> web.Response:
    return web.json_response(_emulator(request).mail.as_json())


async def clear_mail(request: web.Request) -> web.Response:
    _emulator(request).mail.clear()
    return web.json_response([])


async def churn(request: web.Request) -> web.Response:
    """One-shot ETag change without a client write: ``{"apple_id", "calendar"?, "name"?}``."""
    emulator = _emulator(request)
    payload = await _json_object(request)
    apple_id = payload.get("apple_id")
    state = emulator.store.by_apple_id(apple_id) if isinstance(apple_id, str) else None
    if state is None:
        return _bad_request("apple_id must name a known account")
    changed = emulator.store.churn_etags(state, payload.get("calendar"), payload.get("name"))
    return web.json_response({"changed": changed})


async def accounts(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    listing = []
    for state in emulator.store.accounts.values():
        account = state.account
        listing.append(
            {
                "apple_id": account.apple_id,
                "dsid": account.dsid,
                "partition": account.partition,
                "principal_url": f"{emulator.discovery_url.rstrip('/')}/{account.dsid}/principal/",
                "calendar_home_url": emulator.partition_url.rstrip("/") + home_path(account.dsid),
                "collections": [
                    {
                        "id": c.id,
                        "kind": c.kind,
                        "displayname": c.displayname,
                        "components": list(c.components),
                        "access": c.access,
                        "objects": len(c.objects),
                    }
                    for c in state.collections.values()
                ],
            }
        )
    return web.json_response(listing)


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/faults", get_faults)
    app.router.add_post(f"{PREFIX}/faults", set_faults)
    app.router.add_delete(f"{PREFIX}/faults", reset_faults)
    app.router.add_get(f"{PREFIX}/options", get_options)
    app.router.add_post(f"{PREFIX}/options", set_options)
    app.router.add_get(f"{PREFIX}/mail", get_mail)
    app.router.add_delete(f"{PREFIX}/mail", clear_mail)
    app.router.add_post(f"{PREFIX}/churn", churn)
    app.router.add_get(f"{PREFIX}/accounts", accounts)
