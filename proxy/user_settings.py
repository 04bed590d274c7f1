"""Each user's own settings (today: their time zone), in the ``user_settings`` table of the calrelay database.

A user's time zone is what the status page shows times in, what availability queries read times without an
offset in, and the ``X-WR-TIMEZONE`` of their subscription feeds. Without one, ``[availability] timezone``
applies; a ``?tz=Area/City`` query overrides both for one request.

- ``GET /api/v1/users/{user}/settings``  ``{"user", "timezone": NAME | null, "effective_timezone": NAME}``
- ``PUT /api/v1/users/{user}/settings``  ``{"timezone": "Europe/Berlin"}`` (``null`` goes back to the default);
  an unknown zone is a 400 saying what to give instead.
- ``calrelay timezone USER [ZONE | --clear]`` (:mod:`proxy.user_settings_cli`).

The table is its own (not a column of the users or links tables): a setting belongs to the person whether or
not their iCloud account is linked, and wherever their account is stored.
"""

from __future__ import annotations

import functools
import json
import time
import zoneinfo
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.dialects import postgresql, sqlite

from proxy.api import json_error, require_access
from proxy.database import metadata, reading, writing
from proxy.keys import SETTINGS, STATE

#: Longest zone name accepted (the longest IANA name has 32 characters).
MAX_ZONE_LENGTH = 64

user_settings = sa.Table(
    "user_settings",
    metadata,
    sa.Column("user", sa.String(255), primary_key=True),
    sa.Column("timezone", sa.String(MAX_ZONE_LENGTH)),  # an IANA name; null: [availability] timezone
    sa.Column("updated_at", sa.Float, nullable=False),
)


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_zone(name: object) -> str:
    """``name`` as a known IANA zone name; ValueError saying what to give instead."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("timezone must be an IANA time zone name such as Europe/Berlin, America/New_York or UTC")
    name = name.strip()
    if len(name) > MAX_ZONE_LENGTH or name not in _zone_names():
        shown = name if len(name) <= MAX_ZONE_LENGTH else name[:MAX_ZONE_LENGTH] + "…"
        raise ValueError(f"unknown time zone {shown!r}: give an IANA name such as Europe/Berlin, "
                         "America/New_York or UTC (the list: `timedatectl list-timezones`)")
    return name


class UserSettings:
    """The ``user_settings`` table (blocking calls: the server runs them on the state's threads)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[user_settings])

    def timezone(self, user: str) -> str | None:
        with reading(self.engine) as connection:
            return connection.execute(
                sa.select(user_settings.c.timezone).where(user_settings.c.user == user)
            ).scalar_one_or_none()

    def set_timezone(self, user: str, name: str | None) -> None:
        """Set (a name checked with :func:`parse_zone`) or clear (None) the user's zone."""
        row = {"user": user, "timezone": name, "updated_at": time.time()}
        with writing(self.engine) as connection:
            # One statement on both backends, so that two writers at once cannot both insert.
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            statement = dialect.insert(user_settings).values(**row)
            connection.execute(statement.on_conflict_do_update(
                index_elements=[user_settings.c.user],
                set_={"timezone": statement.excluded.timezone, "updated_at": statement.excluded.updated_at},
            ))


USER_SETTINGS = web.AppKey("calrelay.user_settings", UserSettings)


def setup_routes(app: web.Application, store: UserSettings) -> None:
    app[USER_SETTINGS] = store
    app.router.add_get("/api/v1/users/{user}/settings", get_settings)
    app.router.add_put("/api/v1/users/{user}/settings", put_settings)


async def zone_of(app: web.Application, user: str) -> ZoneInfo:
    """The user's zone: their own setting, else ``[availability] timezone``."""
    default = app[SETTINGS].availability.timezone
    store = app.get(USER_SETTINGS)
    name = await app[STATE].call(store.timezone, user) if store is not None else None
    try:
        return ZoneInfo(name or default)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):  # the tz database changed under a stored name
        return ZoneInfo(default)


async def requested_zone(request: web.Request, user: str) -> ZoneInfo:
    """``?tz=Area/City`` when given (ValueError if unknown), else :func:`zone_of` the user."""
    if (wanted := request.query.get("tz")) is not None:
        return ZoneInfo(parse_zone(wanted))
    return await zone_of(request.app, user)


async def _answer(request: web.Request, user: str) -> web.Response:
    stored = await request.app[STATE].call(request.app[USER_SETTINGS].timezone, user)
    effective = await zone_of(request.app, user)
    return web.json_response({"user": user, "timezone": stored, "effective_timezone": effective.key})


async def get_settings(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    return await _answer(request, user)


async def put_settings(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    if (denied := require_access(request, user)) is not None:
        return denied
    try:
        body: Any = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return json_error(400, 'the body must be JSON: {"timezone": "Europe/Berlin"} (null for the default)')
    if not isinstance(body, dict) or set(body) - {"timezone"} or "timezone" not in body:
        return json_error(400, 'the body must be {"timezone": NAME}, NAME an IANA zone or null for the default')
    try:
        name = None if body["timezone"] is None else parse_zone(body["timezone"])
    except ValueError as error:
        return json_error(400, str(error), code="invalid_timezone")
    await request.app[STATE].call(request.app[USER_SETTINGS].set_timezone, user, name)
    return await _answer(request, user)
