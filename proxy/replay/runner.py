"""Send a recording's requests to a server, in order, and collect the differences (the I/O half of replay)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from proxy.replay.compare import MAX_BODY_DIFFERENCES, Bindings, Difference, DiffKind, compare
from proxy.replay.har import Exchange, Message

log = logging.getLogger(__name__)

#: Headers the client library computes itself, or that must not be replayed: the recording's connection and
#: credentials (redacted anyway) are not the replay's. Accept-Encoding is left to aiohttp so that it only
#: asks for encodings it can decode.
_NOT_REPLAYED = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "expect",
        "accept-encoding",
        "authorization",
        "proxy-authorization",
        "cookie",
    }
)
#: Headers holding a URL on the recorded server.
_URL_HEADERS = frozenset({"destination"})


class TargetUnreachable(Exception):
    """No connection could be made to the target: the replay says nothing about the server."""


class AuthenticationFailed(Exception):
    """The target refused the replay's credentials where the recorded server accepted the recorded ones:
    every later request would differ too, so the replay stops (and says so) instead of reporting them."""


@dataclass(slots=True)
class EntryResult:
    exchange: Exchange
    actual_status: int | None
    differences: list[Difference]

    @property
    def matched(self) -> bool:
        return not self.differences


@dataclass(slots=True)
class Report:
    target: str
    total: int
    results: list[EntryResult] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def matched(self) -> bool:
        return all(result.matched for result in self.results)

    @property
    def differing(self) -> list[EntryResult]:
        return [result for result in self.results if not result.matched]

    def render(self, *, verbose: bool = False) -> str:
        """The readable report: every differing request with what differed; matching ones when verbose."""
        lines = [f"Replaying against {self.target}"]
        for result in self.results:
            exchange = result.exchange
            path = urlsplit(exchange.url).path or "/"
            got = result.actual_status if result.actual_status is not None else "no response"
            heading = f"#{exchange.number} {exchange.method} {path} (recorded {exchange.status}, got {got})"
            if result.matched:
                if verbose:
                    lines.append(f"{heading}: ok")
                continue
            lines.append(f"{heading}: DIFFERS")
            shown = result.differences[:MAX_BODY_DIFFERENCES]
            lines.extend(f"    {difference.describe()}" for difference in shown)
            if len(result.differences) > len(shown):
                lines.append(f"    ... and {len(result.differences) - len(shown)} more differences")
        replayed = len(self.results)
        differing = len(self.differing)
        summary = f"{replayed - differing} of {replayed} replayed requests matched, {differing} differed"
        if replayed < self.total:
            reason = "stopped at the first difference" if self.stopped_early else "filtered by --only"
            summary += f" ({self.total - replayed} of {self.total} not replayed: {reason})"
        lines.append(summary + ".")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to replay: ``http://host:port/base``; the recording's paths are appended to ``base``."""

    origin: str
    base: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"target must be an http(s) URL, got {url!r}")
        return cls(f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/"))

    def rebase(self, recorded_url: str) -> str:
        parts = urlsplit(recorded_url)
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.origin}{self.base}{parts.path or '/'}{query}"


async def replay(
    exchanges: Sequence[Exchange],
    target: Target,
    *,
    authorization: str | None = None,
    only: Collection[str] | None = None,
    stop_on_first: bool = False,
    timeout: float = 30.0,
) -> Report:
    """Replay ``exchanges`` in order against ``target``; TargetUnreachable when it cannot be connected to.

    ``authorization`` is the Authorization header to send where the recorded request had one."""
    report = Report(target=f"{target.origin}{target.base}/", total=len(exchanges))
    bindings = Bindings()
    wanted = {method.upper() for method in only} if only else None
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout, cookie_jar=aiohttp.DummyCookieJar()) as session:
        for exchange in exchanges:
            if wanted is not None and exchange.method not in wanted:
                continue
            result = await _replay_one(session, exchange, target, authorization, bindings)
            report.results.append(result)
            log.debug(
                "#%d %s %s: %d differences",
                exchange.number,
                exchange.method,
                exchange.url,
                len(result.differences),
            )
            if stop_on_first and not result.matched:
                report.stopped_early = True
                break
    return report


async def _replay_one(
    session: aiohttp.ClientSession,
    exchange: Exchange,
    target: Target,
    authorization: str | None,
    bindings: Bindings,
) -> EntryResult:
    recorded_origin = _origin(exchange.url)
    url = target.rebase(bindings.substitute(exchange.url))
    headers = []
    for name, value in exchange.request.headers:
        if name.lower() in _NOT_REPLAYED:
            continue
        if name.lower() in _URL_HEADERS:
            value = target.rebase(value)
        headers.append((name, bindings.substitute(value)))
    body = _request_body(exchange.request.body, bindings, recorded_origin, target)
    # The recording's Authorization is redacted: the replay authenticates as --user, and only where the
    # recorded client did (an unauthenticated probe must stay unauthenticated to get the same 401).
    if authorization is not None and exchange.request.header("Authorization") is not None:
        headers.append(("Authorization", authorization))
    try:
        async with session.request(exchange.method, url, headers=headers, data=body, allow_redirects=False) as response:
            actual_body = await response.read()
            actual = Message(tuple(response.headers.items()), actual_body)
            status = response.status
    except aiohttp.ClientConnectorError as error:
        raise TargetUnreachable(f"cannot connect to {target.origin}: {error.os_error or error}") from error
    except (aiohttp.ClientError, TimeoutError) as error:
        message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return EntryResult(exchange, None, [Difference(DiffKind.ERROR, "", None, message)])
    if status == 401 and exchange.status != 401 and exchange.request.header("Authorization") is not None:
        who = "the --user credentials" if authorization is not None else "the request without credentials"
        raise AuthenticationFailed(
            f"authentication failed: {target.origin} answered 401 to {who} at #{exchange.number} "
            f"{exchange.method} {urlsplit(exchange.url).path} (recorded {exchange.status}); check --user and the "
            "password given with --password-stdin"
        )
    differences = compare(exchange.status, exchange.response, status, actual, bindings)
    return EntryResult(exchange, status, differences)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _request_body(body: bytes, bindings: Bindings, recorded_origin: str, target: Target) -> bytes:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return body
    # Absolute URLs of the recorded server (a multiget href, say) point at the target on replay.
    text = text.replace(recorded_origin, f"{target.origin}{target.base}")
    return bindings.substitute(text).encode("utf-8")
