"""RFC 6578 §3.7: ``sync-collection`` with ``DAV:limit``, paged by calrelay with continuation tokens.

Radicale ignores ``DAV:limit`` and always answers every change. When a client asks for a limit, the front
door asks Radicale for the changes since the client's token, sorts them by href, answers the first
``nresults`` of them with a ``507`` response for the request-URI (§3.6) and a *continuation token* instead of
Radicale's. The continuation token is a URI that says how far the client is, per range of hrefs:

- ``base``: the storage's token the client started from ("" for an initial sync);
- ``tiers``: ``(token, upto)`` pairs in increasing ``upto``: the client is in step at ``token`` for the hrefs
  after the previous tier's ``upto`` up to this ``upto``, and at ``base`` for the hrefs after the last tier.

The next page therefore brings, for each range, the changes since that range's token; every list comes from
Radicale's own sync (the storage's ``sync()``), so this works for any storage plugin that implements it.
A page that ends at href ``p`` at storage token ``t`` leaves the client in step at ``t`` up to ``p``: the new
tiers are ``(t, p)`` followed by the old tiers that reach beyond ``p``. Nothing is ever lost; at worst an href
is sent twice. Normally there is one tier; more appear only when many already-sent objects change again
between pages. Past :data:`MAX_TIERS` the remainder is sent whole, untruncated, rather than risk a token
that grows without bound. The report that brings the remainder in full hands out the storage's own token,
which the client keeps using from then on.

A request without ``DAV:limit`` is never truncated (Apple Calendar does not page); one with a continuation
token but no limit gets the whole remainder. Each page costs one Radicale sync per tier plus one.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from proxy.interop.davxml import DAV, error_response, href_of, parse, serialize, status_response, xml_response

log = logging.getLogger(__name__)

TOKEN_PREFIX = "urn:calrelay:sync-page:"
TRUNCATED_STATUS = "HTTP/1.1 507 Insufficient Storage"
MAX_TIERS = 8


@dataclass(frozen=True)
class Checkpoint:
    base: str
    tiers: tuple[tuple[str, str], ...]  # (storage token, greatest href of the range), increasing hrefs

    def encode(self) -> str:
        raw = json.dumps([self.base, [list(tier) for tier in self.tiers]], separators=(",", ":")).encode()
        return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Checkpoint:
        """Raises ValueError for a token calrelay did not issue."""
        if not token.startswith(TOKEN_PREFIX):
            raise ValueError("not a calrelay continuation token")
        data = token[len(TOKEN_PREFIX):]
        try:
            values = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
            base, tiers = values
            parsed = tuple((str(t), str(u)) for t, u in tiers if isinstance(t, str) and isinstance(u, str))
        except (binascii.Error, ValueError, TypeError):
            raise ValueError("malformed continuation token") from None
        if not isinstance(base, str) or not parsed or len(parsed) != len(tiers) or len(parsed) > MAX_TIERS:
            raise ValueError("malformed continuation token")
        if [upto for _, upto in parsed] != sorted({upto for _, upto in parsed}):
            raise ValueError("malformed continuation token")
        return cls(base, parsed)


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
    since_base: Sequence[ET.Element],
    checkpoint: Checkpoint | None,
    since_tier: Mapping[str, Sequence[ET.Element]],
) -> list[ET.Element]:
    """The responses the client still needs, in href order.

    ``since_base`` are the changes since the checkpoint's ``base``, ``since_tier`` the changes since each
    tier's token. Each href is taken from the list of the range it falls in.
    """
    if checkpoint is None:
        return sorted(since_base, key=href_of)
    needed: dict[str, ET.Element] = {}
    lower = None
    for token, upto in checkpoint.tiers:
        for response in since_tier[token]:
            href = href_of(response)
            if (lower is None or href > lower) and href <= upto:
                needed[href] = response
        lower = upto
    for response in since_base:
        if lower is None or href_of(response) > lower:
            needed[href_of(response)] = response
    return [needed[href] for href in sorted(needed)]


def plan_page(
    since_base: Sequence[ET.Element],
    checkpoint: Checkpoint | None,
    since_tier: Mapping[str, Sequence[ET.Element]],
    base: str,
    storage_token: str,
    limit: int | None,
) -> tuple[list[ET.Element], str, bool]:
    """One page: its responses, the token to hand out, and whether it is truncated (pure).

    ``storage_token`` is the storage's token of the oldest of the syncs the lists come from.
    """
    needed = remaining(since_base, checkpoint, since_tier)
    if limit is None or len(needed) <= limit:
        return list(needed), storage_token, False
    shown = list(needed[:limit])
    last = href_of(shown[-1])
    tiers = ((storage_token, last), *(tier for tier in (checkpoint.tiers if checkpoint else ()) if tier[1] > last))
    if len(tiers) > MAX_TIERS:
        log.warning("sync-collection: objects keep changing between pages; sending the remainder whole")
        return list(needed), storage_token, False
    return shown, Checkpoint(base, tiers).encode(), True


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
    # The base sync goes first: its token is the oldest state any list below reflects.
    full = await forward(_body(root, base))
    answer = _answer(full)
    if answer is None:
        return full  # Radicale's refusal (403 valid-sync-token, 404, …) as it is
    since_base, storage_token = answer
    since_tier: dict[str, list[ET.Element]] = {}
    for tier_token, _ in checkpoint.tiers if checkpoint else ():
        tier_answer = _answer(await forward(_body(root, tier_token)))
        if tier_answer is None:  # the storage forgot the token: only a fresh sync is safe
            return error_response(403, DAV + "valid-sync-token", "the paging checkpoint expired: start over")
        since_tier[tier_token] = tier_answer[0]
    shown, new_token, truncated = plan_page(since_base, checkpoint, since_tier, base, storage_token, limit)
    multistatus = ET.Element(DAV + "multistatus")
    multistatus.extend(shown)
    if truncated:
        multistatus.append(status_response(request.rel_url.raw_path, TRUNCATED_STATUS))
    ET.SubElement(multistatus, DAV + "sync-token").text = new_token
    return xml_response(multistatus)
