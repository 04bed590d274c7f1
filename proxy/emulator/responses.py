"""Response helpers shared by the method handlers: iCloud's HTML errors, its 401, and 207 bodies."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from html import escape
from http import HTTPStatus

from aiohttp import web
from multidict import CIMultiDict

from proxy.emulator.context import Emulator
from proxy.emulator.resources import Target
from proxy.emulator.store import AccountState

XML_CONTENT_TYPE = "text/xml"


@dataclass
class RequestContext:
    request: web.Request
    emulator: Emulator
    state: AccountState
    target: Target


def html_error(emulator: Emulator, status: int, detail: str = "") -> web.Response:
    """iCloud's error bodies are small HTML pages signed by AppleHttpServer."""
    reason = "Unsupported Request" if status == 501 else HTTPStatus(status).phrase
    body = (
        f"<html><head><title>{status} {escape(reason)}</title></head><body>"
        f"<h1>{escape(reason)}</h1>"
        + (f"<p>{escape(detail)}</p>" if detail else "")
        + f"<hr><address>AppleHttpServer/{emulator.server_build}</address></body></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html")


def unauthorized() -> web.Response:
    """An empty 401 with both of iCloud's challenges, as two separate headers."""
    headers: CIMultiDict[str] = CIMultiDict()
    headers.add("WWW-Authenticate", 'Basic realm="MMCalDav"')
    headers.add("WWW-Authenticate", 'X-MobileMe-AuthToken realm="MMCalDav"')
    return web.Response(status=401, headers=headers, body=b"")


def multistatus_response(body: bytes, status: int = 207) -> web.Response:
    return web.Response(status=status, body=body, content_type=XML_CONTENT_TYPE, charset="utf-8")


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, separator, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if separator else None


def authenticate(request: web.Request, emulator: Emulator) -> AccountState | None:
    """Only an app-specific password of a known Apple ID opens the account (never the main password)."""
    credentials = basic_credentials(request)
    if credentials is None or emulator.faults.settings.revoke_app_passwords:
        return None
    state = emulator.store.by_apple_id(credentials[0])
    if state is None or not state.account.accepts(credentials[1]):
        return None
    return state


def etag_matches(header: str, etag: str) -> bool:
    """Whether an If-Match/If-None-Match list names ``etag`` (quotes and weak prefixes are tolerated)."""
    candidates = [item.strip().removeprefix("W/").strip('"') for item in header.split(",")]
    return "*" in candidates or etag in candidates
