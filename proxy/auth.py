"""Authentication for every endpoint: the users, password checks, and slowing down guessers.

The users live in the database (:mod:`proxy.cluster.users_db`), so that every instance sharing it serves the
same ones. A users file of earlier versions is imported once: htpasswd format with bcrypt hashes, one
``name:hash`` per line, with an optional third field ``service`` for service accounts (the CRM backend), which
may act on every principal. bcrypt hashes never contain ``:``, so the format stays unambiguous.

bcrypt is slow on purpose; CalDAV clients send credentials with every request, so a successful check is
remembered (keyed by an HMAC of the password under a per-process key, never the password itself) for as long
as the user's stored hash stays the one it matched. Wrong passwords are slowed down per (client address, user
name) with an exponential delay, so one user's typos do not slow the other users behind the same address (a CRM
backend); an address that fails for many different names (a password spray) is slowed down for every name that
has not logged in from it recently. A request without credentials is challenged at once, because clients probe
that way first.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import bcrypt
from aiohttp import web

from proxy.config import AuthSettings

logger = logging.getLogger(__name__)

SERVICE_FLAG = "service"
#: Paths that answer without credentials.
PUBLIC_PATHS = frozenset({"/health"})


@dataclass(frozen=True)
class Principal:
    name: str
    is_service: bool = False

    def may_access(self, user: str) -> bool:
        return self.is_service or self.name == user


PRINCIPAL_REQUEST_KEY = web.RequestKey("calrelay.principal", Principal)


@dataclass(frozen=True)
class UserRecord:
    name: str
    password_hash: bytes
    is_service: bool


def valid_user_name(name: str) -> bool:
    """Names become URL path segments and directory names: keep them plain."""
    return bool(name) and len(name) <= 64 and all(c.isalnum() or c in "._-@" for c in name) and name[0] != "."


class Users(Protocol):
    """Where the users come from: :class:`proxy.cluster.users_db.UsersTable` (or a :class:`UsersFile`)."""

    def records(self) -> dict[str, UserRecord]: ...


class UserExists(Exception):
    """``users add`` on a name that is taken: replacing it must be asked for."""

    def __init__(self, record: UserRecord) -> None:
        super().__init__(record.name)
        self.record = record


class UsersFile:
    """The htpasswd-style users file. Reads are cached until the file's mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._records: dict[str, UserRecord] = {}

    def records(self) -> dict[str, UserRecord]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._records = None, {}
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._records = self._parse(self.path.read_text(encoding="utf-8"))
            self._stamp = stamp
        return self._records

    @staticmethod
    def _parse(text: str) -> dict[str, UserRecord]:
        records = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.strip().split(":")
            if len(fields) not in (2, 3) or not fields[0] or (len(fields) == 3 and fields[2] != SERVICE_FLAG):
                logger.warning("users file line %d is not name:bcrypt-hash[:service]; ignored", number)
                continue
            records[fields[0]] = UserRecord(fields[0], fields[1].encode(), len(fields) == 3)
        return records

    def write(self, records: dict[str, UserRecord]) -> None:
        lines = [
            f"{r.name}:{r.password_hash.decode()}" + (f":{SERVICE_FLAG}" if r.is_service else "")
            for r in sorted(records.values(), key=lambda r: r.name)
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + ("\n" if lines else ""))
        os.replace(temporary, self.path)

    def add(self, name: str, password: str, is_service: bool, *, replace: bool = False) -> None:
        """Add a user; an existing name is refused (ValueError) unless ``replace``."""
        if not valid_user_name(name):
            raise ValueError(
                f"invalid user name {name!r}: use letters, digits, '.', '_', '-', '@' (not starting with '.')"
            )
        if not password:
            raise ValueError("the password must not be empty")
        records = dict(self.records())
        if name in records and not replace:
            raise UserExists(records[name])
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        records[name] = UserRecord(name, hashed, is_service)
        self.write(records)

    def set_password(self, name: str, password: str) -> None:
        """Change an existing user's password; the role stays as it is. KeyError for an unknown name."""
        if not password:
            raise ValueError("the password must not be empty")
        records = dict(self.records())
        record = records[name]
        records[name] = UserRecord(name, bcrypt.hashpw(password.encode(), bcrypt.gensalt()), record.is_service)
        self.write(records)

    def remove(self, name: str) -> bool:
        records = dict(self.records())
        if records.pop(name, None) is None:
            return False
        self.write(records)
        return True


class Authenticator:
    """Checks Basic credentials against the users, with a success cache and a per-client slowdown."""

    def __init__(self, users: Users, settings: AuthSettings) -> None:
        self.users = users
        self.settings = settings
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[tuple[str, bytes], bytes] = {}  # (name, HMAC of password) -> hash it matched
        # (client, name) -> (consecutive failures, last time); the same per client alone, across names.
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}
        self._client_failures: dict[str, tuple[int, float]] = {}
        self._good: dict[tuple[str, str], float] = {}  # (client, name) -> last successful login

    @functools.cached_property
    def _decoy_hash(self) -> bytes:
        return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt())

    def _fingerprint(self, password: str) -> bytes:
        return hmac.new(self._cache_key, password.encode(), hashlib.sha256).digest()

    def check(self, name: str, password: str) -> Principal | None:
        """The principal for valid credentials, else None. Blocking (bcrypt): call it in a thread."""
        record = self.users.records().get(name)
        if record is None:
            # Spend the same effort as for a real user so that timing does not reveal which names exist.
            bcrypt.checkpw(password.encode(), self._decoy_hash)
            return None
        key = (name, self._fingerprint(password))
        if self._verified.get(key) == record.password_hash:
            return Principal(name, record.is_service)
        if not bcrypt.checkpw(password.encode(), record.password_hash):
            return None
        self._verified[key] = record.password_hash
        return Principal(name, record.is_service)

    def _delay(self, entry: tuple[int, float], free_failures: int) -> float:
        failures, last = entry
        failures -= free_failures
        if failures <= 0 or time.monotonic() - last > self.settings.max_failed_login_delay * 6:
            return 0.0
        return min(self.settings.failed_login_delay * 2 ** (failures - 1), self.settings.max_failed_login_delay)

    def penalty(self, client: str, name: str) -> float:
        """Seconds to hold back the answer to ``name`` from ``client`` after recent failed attempts."""
        own = self._delay(self._failures.get((client, name), (0, 0.0)), 0)
        recent_success = time.monotonic() - self._good.get((client, name), -1e9) < _KNOWN_GOOD_SECONDS
        spray = 0.0 if recent_success else self._delay(
            self._client_failures.get(client, (0, 0.0)), self.spray_threshold
        )
        return max(own, spray)

    #: Failures from one address, over all names, before the address-wide (anti-spray) slowdown starts.
    spray_threshold = 20

    def record(self, client: str, name: str, success: bool) -> None:
        key = (client, name)
        now = time.monotonic()
        if success:
            self._failures.pop(key, None)
            self._good[key] = now
            _bound(self._good, lambda k: self._good[k])
            return
        failures, _ = self._failures.get(key, (0, 0.0))
        self._failures[key] = (failures + 1, now)
        client_failures, _ = self._client_failures.get(client, (0, 0.0))
        self._client_failures[client] = (client_failures + 1, now)
        # Bound memory under a spray of addresses or names.
        _bound(self._failures, lambda k: self._failures[k][1])
        _bound(self._client_failures, lambda k: self._client_failures[k][1])


#: How long a successful login exempts a (client, name) from the address-wide slowdown.
_KNOWN_GOOD_SECONDS = 3600.0
_MAX_TRACKED = 10_000


def _bound(table: dict, age: Callable[[object], float]) -> None:
    if len(table) > _MAX_TRACKED:
        del table[min(table, key=age)]


def parse_basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (name, password) if sep else None


def challenge(realm: str, message: str) -> web.Response:
    return web.Response(
        status=401,
        text=message + "\n",
        headers={"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'},
    )


def make_auth_middleware(
    authenticator: Authenticator,
    run_blocking: Callable[..., Awaitable[Principal | None]],
    public_paths: frozenset[str] = frozenset(),
    public_prefixes: tuple[str, ...] = (),
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Require valid credentials everywhere except ``PUBLIC_PATHS``, ``public_paths`` and below
    ``public_prefixes`` (whose handlers check a secret of their own)."""
    realm = authenticator.settings.realm
    anonymous = PUBLIC_PATHS | public_paths

    @web.middleware
    async def auth_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in anonymous or (public_prefixes and request.path.startswith(public_prefixes)):
            return await handler(request)
        credentials = parse_basic(request.headers.get("Authorization", ""))
        if credentials is None:
            return challenge(realm, "Authentication required: send HTTP Basic credentials of a calrelay user.")
        client = request.remote or "unknown"
        delay = authenticator.penalty(client, credentials[0])
        if delay:
            await asyncio.sleep(delay)
        principal = await run_blocking(authenticator.check, *credentials)
        authenticator.record(client, credentials[0], principal is not None)
        if principal is None:
            logger.warning("failed login for %r from %s", credentials[0], client)
            return challenge(realm, "Wrong user name or password.")
        request[PRINCIPAL_REQUEST_KEY] = principal
        return await handler(request)

    return auth_middleware


def principal_of(request: web.Request) -> Principal:
    """The authenticated principal of a request (the auth middleware guarantees one off public paths)."""
    return request[PRINCIPAL_REQUEST_KEY]
