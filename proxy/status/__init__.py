"""The status page: server-rendered HTML (Jinja2 templates in this package), behind calrelay's authentication.

- ``GET /status``: a person is sent to their own page; a service account sees every user, with
  ``?attention=1`` keeping only the links that need someone to act.
- ``GET /status/{user}``: the user's iCloud link, each linked calendar's role and state, the last pull and
  push, a running import's progress (fetched and written of the total, the rate and the time left), pending
  work with its reason, the latest relay decisions, and a red banner saying what to do when iCloud no longer
  accepts the app-specific password.

Times are shown in the user's own time zone (:mod:`proxy.user_settings`; the overview in the viewer's), else
``[availability] timezone``; a ``?tz=Area/City`` query overrides both (an unknown one is ignored: a page must
not break on an old bookmark).
The pages use no script and one small stylesheet, so they read on a phone as on a desktop; while an import
runs, the user's page reloads itself every few seconds (``<meta http-equiv="refresh">``).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from proxy.audit import PUSHED
from proxy.auth import principal_of
from proxy.keys import AUTHENTICATOR, ENGINE
from proxy.links.api import LINKS
from proxy.links.service import link_status
from proxy.operations import AUDIT
from proxy.user_settings import requested_zone, zone_of

STATUS_PATH = "/status"
#: Link states that need a person to act (anything but a working link).
ATTENTION_STATES = frozenset({"needs-reconnect", "error"})
RECENT_ACTIVITY = 15
#: Seconds between reloads of a user's page while an import runs.
IMPORT_REFRESH = 5

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("proxy.status", "templates"),
    autoescape=jinja2.select_autoescape(default=True),
    undefined=jinja2.StrictUndefined,
)


def setup_routes(app: web.Application) -> None:
    app.router.add_get(STATUS_PATH, overview)
    app.router.add_get(STATUS_PATH + "/{user}", user_page)


def wants_html(request: web.Request) -> bool:
    """A browser asking for a page (CalDAV clients never send Accept: text/html for GET /)."""
    return "text/html" in request.headers.get("Accept", "")


async def _zone(request: web.Request, user: str) -> ZoneInfo:
    """``?tz=Area/City`` (e.g. from a bookmark) if it names a zone, else the user's own or the default."""
    with contextlib.suppress(ValueError):
        return await requested_zone(request, user)
    return await zone_of(request.app, user)


async def _render(request: web.Request, template: str, zone_user: str, status: int = 200,
                  **context: Any) -> web.Response:
    """The page, times in the zone of ``zone_user`` (whose page it is, or the viewer)."""
    zone = await _zone(request, zone_user)
    context.setdefault("refresh", None)
    page = _templates.get_template(template).render(
        viewer=principal_of(request), zone=zone.key, local=lambda iso: _local(iso, zone), time_left=time_left,
        percent=percent, importing=importing, **context
    )
    return web.Response(text=page, content_type="text/html", charset="utf-8", status=status,
                        headers={"Cache-Control": "no-store"})


def _local(iso: str | None, zone: ZoneInfo) -> str:
    """An ISO timestamp (UTC) as the user's local time, or a dash."""
    if not iso:
        return "never"
    return datetime.fromisoformat(iso).astimezone(zone).strftime("%a %d %b %Y, %H:%M")


def time_left(seconds: float | None) -> str:
    """The time an import still needs, as a person says it."""
    if seconds is None:
        return "time left not known yet"
    if seconds < 60:
        return f"about {max(1, round(seconds))} s left"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"


def percent(part: int, whole: int) -> str:
    return f"{100 * part // whole} %" if whole else "0 %"


def importing(report: dict[str, Any]) -> bool:
    return any(c.get("import") for c in report.get("calendars", []))


def needs_attention(report: dict[str, Any]) -> bool:
    return bool(report.get("linked")) and (report["state"] in ATTENTION_STATES or bool(report["pending"]))


async def overview(request: web.Request) -> web.StreamResponse:
    viewer = principal_of(request)
    if not viewer.is_service:
        raise web.HTTPFound(f"{STATUS_PATH}/{viewer.name}")
    users = await request.app[ENGINE].call(request.app[AUTHENTICATOR].users.records)
    service = request.app[LINKS]
    reports = []
    for name, record in sorted(users.items()):
        report = await service.state.call(link_status, service.state.db, name)
        reports.append({**report, "is_service": record.is_service, "attention": needs_attention(report)})
    attention_only = request.query.get("attention") == "1"
    shown = [r for r in reports if r["attention"]] if attention_only else reports
    return await _render(request, "overview.html", viewer.name, reports=shown, total=len(reports),
                         attention_only=attention_only, attention_count=sum(1 for r in reports if r["attention"]))


async def user_page(request: web.Request) -> web.StreamResponse:
    user = request.match_info["user"]
    viewer = principal_of(request)
    if not viewer.may_access(user):
        return await _render(request, "denied.html", viewer.name, status=403, user=user)
    service = request.app[LINKS]
    report = await service.state.call(link_status, service.state.db, user)
    audit = request.app[AUDIT]
    activity = await audit.call(audit.query, user, None, None, RECENT_ACTIVITY)
    pushes = await audit.call(audit.query, user, None, None, 1, PUSHED)
    return await _render(request, "user.html", user, user=user, report=report,
                         activity=[e.to_json() for e in activity],
                         last_push=pushes[0].to_json()["at"] if pushes else None,
                         reconnect=report.get("linked") and report["state"] == "needs-reconnect",
                         refresh=IMPORT_REFRESH if importing(report) else None)
