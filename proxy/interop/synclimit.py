"""RFC 6578 §3.7: ``sync-collection`` with ``DAV:limit``, paged by calrelay with continuation tokens.

Radicale ignores ``DAV:limit`` and always answers every change. When a client asks for a limit, the front
door asks Radicale for the changes since the client's token, sorts them by href, answers the first
``nresults`` of them with a ``507`` response for the request-URI (§3.6) and a *continuation token* instead of
Radicale's. The continuation token is a URI that carries where the client is:

- ``base``: the storage's token the client started from ("" for an initial sync);
- ``mid``: the storage's token at the time of the last page;
- ``last``: the greatest href the client has been sent.

Invariant: the client is in step at ``mid`` for every href up to ``last``, and at ``base`` for the hrefs
after it. So the next page must bring the hrefs after ``last`` changed since ``base``, and any href changed
since ``mid``. Both lists come from Radicale's own sync (the storage's ``sync()``), so this works for any
storage plugin that implements it, and nothing is ever lost: at worst an href is sent twice. A report that
brings the remainder in full gets the storage's real token, which the client keeps using from then on.

A request without ``DAV:limit`` is never truncated (Apple Calendar does not page); one with a continuation
token but no limit gets the whole remainder.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from proxy.interop.davxml import DAV, error_response, href_of, parse, serialize, status_response, xml_response

log = logging.getLogger(__name__)

TOKEN_PREFIX = "urn:calrelay:sync-page:"
TRUNCATED_STATUS = "HTTP/1.1 507 Insufficient Storage"


@dataclass(frozen=True)
class Checkpoint:
    base: str
    mid: str
    last: str

    def encode(self) -> str:
        raw = json.dumps([self.base, self.mid, self.last], separators=(",", ":")).encode()
        return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Checkpoint:
        """Raises ValueError for a token calrelay did not issue."""
        if not token.startswith(TOKEN_PREFIX):
            raise ValueError("not a calrelay continuation token")
        data = token[len(TOKEN_PREFIX):]
        try:
            values = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        except (binascii.Error, ValueError):
            raise ValueError("malformed continuation token") from None
        if not (isinstance(values, list) and len(values) == 3 and all(isinstance(v, str) for v in values)):
            raise ValueError("malformed continuation token")
        return cls(*values)


def parse_limit(root: ET.Element) -> int | None:
    """The ``DAV:limit/DAV:nresults`` of a sync-collection body, or None. Raises ValueError if unusable."""
    limit = root.find(DAV + "limit")
    if limit is None:
        return None
    nresults = limit.find(DAV + "nresults")
    try:
        value = int((nresults.text or "").strip()) if nresults is not None else 0
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError("DAV:limit needs a DAV:nresults with a positive integer")
    return value


def remaining(
    responses: Sequence[ET.Element], checkpoint: Checkpoint | None, since_mid: Sequence[ET.Element] | None
) -> list[ET.Element]:
    """The responses the client still needs, in href order.

    ``responses`` are the changes since ``base``, ``since_mid`` the changes since the checkpoint's ``mid``
    (None: the storage no longer knows ``mid``, so everything since ``base`` is sent again). An href changed
    since ``mid`` but not since ``base`` (deleted again after an initial sync's page) comes from ``since_mid``.
    """
    if checkpoint is None or since_mid is None:
        return sorted(responses, key=href_of)
    changed = {href_of(r): r for r in since_mid}
    needed = {href_of(r): r for r in responses if href_of(r) > checkpoint.last or href_of(r) in changed}
    for href, response in changed.items():
        needed.setdefault(href, response)
    return [needed[href] for href in sorted(needed)]


def plan_page(
    responses: Sequence[ET.Element],
    checkpoint: Checkpoint | None,
    since_mid: Sequence[ET.Element] | None,
    base: str,
    storage_token: str,
    limit: int | None,
) -> tuple[list[ET.Element], str, bool]:
    """One page: its responses, the token to hand out, and whether it is truncated (pure).

    ``responses`` are the changes since ``base`` (Radicale's answer from ``base``, whose token is
    ``storage_token``); ``since_mid`` the changes since the checkpoint's ``mid`` (see :func:`remaining`).
    """
    needed = remaining(responses, checkpoint, since_mid)
    if limit is None or len(needed) <= limit:
        return list(needed), storage_token, False
    shown = list(needed[:limit])
    return shown, Checkpoint(base, storage_token, href_of(shown[-1])).encode(), True


def _body(root: ET.Element, token: str) -> bytes:
    """The request body for Radicale: ``token`` as the sync-token, no DAV:limit."""
    body = copy.deepcopy(root)
    for limit in body.findall(DAV + "limit"):
        body.remove(limit)
    element = body.find(DAV + "sync-token")
    if element is None:
        element = ET.Element(DAV + "sync-token")
        body.insert(0, element)
    element.text = token
    return serialize(body)


def _answer(response: web.Response) -> tuple[list[ET.Element], str] | None:
    """The responses and the storage's token of a successful sync-collection answer from Radicale."""
    if response.status != 207 or response.body is None:
        return None
    tree = parse(bytes(response.body))
    if tree is None:
        return None
    token = tree.find(DAV + "sync-token")
    return tree.findall(DAV + "response"), (token.text or "") if token is not None else ""


async def sync_collection(
    request: web.Request, root: ET.Element, forward: Callable[[bytes], Awaitable[web.Response]]
) -> web.StreamResponse | None:
    token_element = root.find(DAV + "sync-token")
    token = (token_element.text or "").strip() if token_element is not None else ""
    try:
        limit = parse_limit(root)
    except ValueError as error:
        return error_response(400, DAV + "limit", str(error))
    if limit is None and not token.startswith(TOKEN_PREFIX):
        return None  # Radicale answers in full, as the client expects
    checkpoint = None
    if token.startswith(TOKEN_PREFIX):
        try:
            checkpoint = Checkpoint.decode(token)
        except ValueError as error:
            return error_response(403, DAV + "valid-sync-token", f"{error}: start over with an empty token")
    base = checkpoint.base if checkpoint else token
    full = await forward(_body(root, base))
    answer = _answer(full)
    if answer is None:
        return full  # Radicale's refusal (403 valid-sync-token, 404, …) as it is
    responses, storage_token = answer
    since_mid: list[ET.Element] | None = None
    if checkpoint is not None:
        mid_answer = _answer(await forward(_body(root, checkpoint.mid)))
        if mid_answer is not None:
            since_mid = mid_answer[0]
        else:
            log.info("sync token %s expired: resending every change since the client's base", checkpoint.mid)
    shown, new_token, truncated = plan_page(responses, checkpoint, since_mid, base, storage_token, limit)
    multistatus = ET.Element(DAV + "multistatus")
    multistatus.extend(shown)
    if truncated:
        multistatus.append(status_response(request.rel_url.raw_path, TRUNCATED_STATUS))
    ET.SubElement(multistatus, DAV + "sync-token").text = new_token
    return xml_response(multistatus)
