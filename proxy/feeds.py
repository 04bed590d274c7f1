"""Subscription feeds: a calendar as one ``.ics`` file at a private, revocable URL, with no password.

Apple Calendar and Google Calendar subscriptions cannot send credentials, so the secret is the URL:
``/feeds/<token>.ics``. Only a SHA-256 of the token is stored (the URL is shown once, when the feed is made);
a feed is bound to one calendar of one user and never serves anything else; a revoked feed answers 410, an
unknown token 404, and nothing else below ``/feeds/`` is served (so a calrelay user cannot be named "feeds").

- ``POST   /api/v1/users/{user}/feeds``       ``{"calendar": "sales"}`` → 201 ``{"id", "calendar", "url"}``
- ``GET    /api/v1/users/{user}/feeds``       the user's feeds (without their URLs)
- ``DELETE /api/v1/users/{user}/feeds/{id}``  revoke
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import icalendar
import sqlalchemy as sa
from aiohttp import web

from proxy.api import json_error, require_access
from proxy.database import metadata, reading, writing
from proxy.engine import Engine
from proxy.keys import ENGINE
from proxy.recorder import RECORDING
from proxy.user_settings import zone_of

FEEDS_PREFIX = "/feeds/"
DISPLAY_NAME_PROP = "D:displayname"

feeds = sa.Table(
    "feeds",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("calendar", sa.Text, nullable=False),  # the collection path, "/alice/sales/"
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)


class FeedError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Feed:
    id: str
    user: str
    calendar: str
    created_at: float
    revoked_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "calendar": self.calendar, "created_at": self.created_at,
                "revoked": self.revoked_at is not None}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class FeedStore:
    """The feeds table (blocking calls: run them off the event loop)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[feeds])

    def create(self, user: str, calendar: str) -> tuple[Feed, str]:
        """A new feed of ``calendar`` (a path under ``/user/``) and its secret token."""
        if not calendar.startswith(f"/{user}/"):
            raise FeedError(403, f"{calendar} is not a calendar of {user}")
        token = secrets.token_urlsafe(32)
        feed = Feed(secrets.token_hex(6), user, calendar, time.time(), None)
        with writing(self.engine) as connection:
            connection.execute(feeds.insert().values(
                id=feed.id, user=user, calendar=calendar, token_hash=_hash(token), created_at=feed.created_at))
        return feed, token

    def list(self, user: str) -> list[Feed]:
        with reading(self.engine) as connection:
            rows = connection.execute(
                sa.select(feeds).where(feeds.c.user == user).order_by(feeds.c.created_at)
            ).mappings().all()
        return [Feed(r["id"], r["user"], r["calendar"], r["created_at"], r["revoked_at"]) for r in rows]

    def revoke(self, user: str, feed_id: str) -> bool:
        with writing(self.engine) as connection:
            updated = connection.execute(
                feeds.update()
                .where(feeds.c.id == feed_id, feeds.c.user == user, feeds.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
        return bool(updated)

    def resolve(self, token: str) -> Feed | None:
        with reading(self.engine) as connection:
            row = connection.execute(sa.select(feeds).where(feeds.c.token_hash == _hash(token))).mappings().first()
        return Feed(row["id"], row["user"], row["calendar"], row["created_at"], row["revoked_at"]) if row else None


FEED_STORE = web.AppKey("calrelay.feeds", FeedStore)


def calendar_path(user: str, name: str) -> str:
    """``sales`` or ``/alice/sales/`` → ``/alice/sales/``."""
    name = name.strip("/")
    if "/" in name:
        owner, _, name = name.partition("/")
        if owner != user:
            raise FeedError(403, f"{owner}/{name} is not a calendar of {user}")
    if not name or name in (".", ".."):
        raise FeedError(400, "calendar must name one of the user's calendars, e.g. sales")
    return f"/{user}/{name}/"


def export(engine: Engine, path: str, zone: str | None = None) -> bytes | None:
    """The calendar at ``path`` as one iCalendar file (None when there is no such calendar). ``zone``: the
    owner's time zone, as ``X-WR-TIMEZONE`` (Apple and Google Calendar show floating times and all-day
    events of a subscription in it)."""
    user = path.strip("/").split("/", 1)[0]
    info = next((c for c in engine.list_calendars(user) if c.path == path), None)
    if info is None:
        return None
    merged = icalendar.Calendar()
    merged.add("PRODID", "-//calrelay//feed//EN")
    merged.add("VERSION", "2.0")
    name = info.props.get(DISPLAY_NAME_PROP) or path.strip("/").rsplit("/", 1)[-1]
    merged.add("X-WR-CALNAME", name)
    if zone:
        merged.add("X-WR-TIMEZONE", zone)
    timezones: set[str] = set()
    for item in engine.read_items(path):
        try:
            calendar = icalendar.Calendar.from_ical(item.text)
        except ValueError:
            continue  # stored objects were validated on the way in; a broken one must not stop the feed
        for component in calendar.subcomponents:
            if component.name == "VTIMEZONE":
                if str(component.get("TZID")) in timezones:
                    continue
                timezones.add(str(component.get("TZID")))
            merged.add_component(component)
    return merged.to_ical()


def setup_routes(app: web.Application, store: FeedStore) -> None:
    app[FEED_STORE] = store
    app.router.add_get(FEEDS_PREFIX + "{token}.ics", serve_feed)
    # Nothing else below the prefix: anonymous requests there must never reach the CalDAV engine.
    app.router.add_route("*", FEEDS_PREFIX + "{tail:.*}", no_feed)
    app.router.add_post("/api/v1/users/{user}/feeds", create_feed)
    app.router.add_get("/api/v1/users/{user}/feeds", list_feeds)
    app.router.add_delete("/api/v1/users/{user}/feeds/{id}", revoke_feed)


def _keep_out_of_recordings(request: web.Request, token: str) -> None:
    """A feed token is a credential: the traffic recorder must scrub it like a password."""
    if (recording := request.app.get(RECORDING)) is not None:
        recording.add_secret(token)


async def serve_feed(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    _keep_out_of_recordings(request, request.match_info["token"])
    feed = await engine.call(request.app[FEED_STORE].resolve, request.match_info["token"])
    if feed is None:
        return web.Response(status=404, text="no such feed")
    if feed.revoked_at is not None:
        return web.Response(status=410, text="this feed was revoked; ask for a new subscription URL")
    if not feed.calendar.startswith(f"/{feed.user}/"):  # never another user's calendar, whatever the table says
        return web.Response(status=404, text="no such feed")
    zone = await zone_of(request.app, feed.user)
    body = await engine.call(export, engine, feed.calendar, zone.key)
    if body is None:
        return web.Response(status=404, text="the calendar of this feed no longer exists")
    return web.Response(body=body, content_type="text/calendar", charset="utf-8",
                        headers={"Cache-Control": "private, max-age=300"})


async def no_feed(request: web.Request) -> web.Response:
    return web.Response(status=404, text="no such feed")


async def create_feed(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return json_error(400, 'the body must be JSON: {"calendar": "NAME"}')
    if not isinstance(body, dict) or not isinstance(body.get("calendar"), str):
        return json_error(400, 'the body must be {"calendar": "NAME"}, NAME one of the user\'s calendars')
    engine = request.app[ENGINE]
    try:
        path = calendar_path(user, body["calendar"])
        calendars = {c.path: c for c in await engine.call(engine.list_calendars, user)}
        if path not in calendars:
            raise FeedError(404, f"{user} has no calendar {path}")
        feed, token = await engine.call(request.app[FEED_STORE].create, user, path)
    except FeedError as error:
        return json_error(error.status, str(error))
    _keep_out_of_recordings(request, token)
    url = f"{_public_scheme(request)}://{request.host}{FEEDS_PREFIX}{token}.ics"
    return web.json_response({**feed.to_json(), "url": url}, status=201)


def _public_scheme(request: web.Request) -> str:
    """The scheme subscribers use: a TLS proxy on this machine says so with X-Forwarded-Proto."""
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    if forwarded in ("http", "https") and request.remote in ("127.0.0.1", "::1"):
        return forwarded
    return request.scheme


async def list_feeds(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    engine = request.app[ENGINE]
    return web.json_response({"feeds": [f.to_json() for f in await engine.call(request.app[FEED_STORE].list, user)]})


async def revoke_feed(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    engine = request.app[ENGINE]
    if not await engine.call(request.app[FEED_STORE].revoke, user, request.match_info["id"]):
        return json_error(404, f"{user} has no active feed {request.match_info['id']}")
    return web.Response(status=204)
