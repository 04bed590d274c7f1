"""Operations endpoints: ``/metrics`` for Prometheus and the audit trail under ``/api/v1/users/{user}/activity``.

- ``GET /metrics``: Prometheus text format; access per ``[metrics] access`` (see :mod:`proxy.metrics`).
- ``GET /api/v1/users/{user}/activity[?uid=UID][&before=ID][&limit=N]``: the user's relay decisions, newest
  first, ``{"entries": [...], "next": ID | null}`` (pass ``next`` as ``before`` for the following page).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.api import json_error, require_access
from proxy.audit import DEFAULT_LIMIT, MAX_LIMIT, AuditLog
from proxy.auth import parse_basic
from proxy.keys import AUTHENTICATOR, ENGINE, RELAY, SETTINGS, STATE
from proxy.metrics import CONTENT_TYPE, METRICS_PATH, Metrics, bearer_ok

logger = logging.getLogger(__name__)

METRICS = web.AppKey("calrelay.metrics", Metrics)
AUDIT = web.AppKey("calrelay.audit", AuditLog)
PRUNE_INTERVAL = 3600.0


def setup_routes(app: web.Application) -> None:
    app.router.add_get(METRICS_PATH, metrics)
    app.router.add_get("/api/v1/users/{user}/activity", activity)
    app.cleanup_ctx.append(_audit_lifecycle)


async def _audit_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Prune the audit trail at start and hourly; close it last."""
    audit = app[AUDIT]

    async def prune() -> None:
        while True:
            try:
                if removed := await audit.call(audit.prune):
                    logger.info("audit trail: %d entries past retention removed", removed)
            except Exception:  # keep pruning later whatever happened
                logger.exception("audit trail pruning")
            await asyncio.sleep(PRUNE_INTERVAL)

    task = asyncio.create_task(prune(), name="audit-prune")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    audit.close()  # the engine is the relay state's; it is disposed with the state


async def _may_read_metrics(request: web.Request) -> bool:
    settings = request.app[SETTINGS].metrics
    header = request.headers.get("Authorization", "")
    if settings.access == "token":
        return bearer_ok(header, settings.token)
    credentials = parse_basic(header)
    if credentials is None:
        return False
    authenticator = request.app[AUTHENTICATOR]
    principal = await request.app[ENGINE].call(authenticator.check, *credentials)
    authenticator.record(request.remote or "unknown", credentials[0], principal is not None)
    return principal is not None and principal.is_service


async def metrics(request: web.Request) -> web.Response:
    access = request.app[SETTINGS].metrics.access
    if access == "off":
        raise web.HTTPNotFound(text="metrics are off ([metrics] access = \"off\")")
    if not await _may_read_metrics(request):
        if access == "token":
            return json_error(401, "send Authorization: Bearer <[metrics] token>")
        return web.Response(
            status=401,
            text="metrics need the credentials of a service account",
            headers={"WWW-Authenticate": f'Basic realm="{request.app[SETTINGS].auth.realm}", charset="UTF-8"'},
        )
    state = request.app[STATE]
    relay = request.app[RELAY]
    links = await state.call(state.db.links)
    pending = 0
    for link in links:
        pending += len(await state.call(state.db.pending, link.user))
    backing_off = sum(1 for link in links if (w := relay.worker(link.user)) is not None and w.backing_off)
    registry = request.app[METRICS]
    registry.set_state([link.state for link in links], pending, backing_off, request.app[AUDIT].engine)
    return web.Response(body=registry.exposition(), headers={"Content-Type": CONTENT_TYPE})


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise ValueError(f"{name} must be a positive integer, not {raw!r}")
    return int(raw)


async def activity(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    try:
        before = _int_param(request, "before")
        limit = _int_param(request, "limit") or DEFAULT_LIMIT
    except ValueError as error:
        return json_error(400, str(error))
    if limit > MAX_LIMIT:
        return json_error(400, f"limit must be at most {MAX_LIMIT}")
    audit = request.app[AUDIT]
    entries = await audit.call(audit.query, user, request.query.get("uid"), before, limit)
    return web.json_response({
        "user": user,
        "entries": [entry.to_json() for entry in entries],
        "next": entries[-1].id if len(entries) == limit else None,
    })
