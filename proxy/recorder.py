"""The traffic recorder: every HTTP exchange written to a HAR 1.2 file, with secrets redacted.

The middleware only takes a snapshot of each exchange (the bytes and headers it already has) and puts it on a
queue; a writer thread redacts, converts to HAR and appends to the file, so recording costs a request a few
microseconds. The file is valid HAR after every write: entries go in front of a fixed closing ``]}}`` that is
rewritten each time, so a recording can be read while it grows, and a crash loses at most the entries still
queued. A clean shutdown (``app.cleanup_ctx``) drains the queue before the file is closed.

Redaction (what must never reach the file): Authorization, Proxy-Authorization, Cookie and Set-Cookie values;
JSON and form fields whose name contains "password", "secret" or similar, at any depth; every secret the
recorder knows (registered with :meth:`RecordingControl.add_secret`, or learnt from a Basic Authorization
header or a redacted field), wherever it appears; and, in ``/api/`` bodies, anything shaped like an Apple
app-specific password (``xxxx-xxxx-xxxx-xxxx``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import queue
import re
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from proxy.api import json_error
from proxy.auth import parse_basic, principal_of
from proxy.private import private_dir
from proxy.replay import har

logger = logging.getLogger(__name__)

REDACTED = "[REDACTED]"
#: The switch of the recording API. Its own exchanges are control traffic and are not recorded.
RECORDING_API_PATH = "/api/v1/recording"

_REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_NAME = re.compile(r"^pass$|password|passwd|secret|api[-_]?key|authorization", re.IGNORECASE)
#: Apple app-specific passwords: four groups of four letters (design §3, rule 2).
APP_PASSWORD_SHAPE = re.compile(r"(?<![A-Za-z0-9-])[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}(?![A-Za-z0-9-])")
#: Passwords learnt from traffic are scrubbed from every text only when they are this long: replacing a
#: short password ("abc") everywhere would mangle ordinary words in the bodies. They are still removed from
#: the Authorization header, which is where they travel.
MIN_LEARNT_SECRET_LENGTH = 6


class Redactor:
    """Removes secrets from headers, URLs and bodies. Thread-safe: the writer thread learns secrets while
    the event loop may register new ones."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Scrub ``secret`` from everything recorded from now on (an app-specific password, an API key)."""
        if secret:
            with self._lock:
                self._secrets.add(secret)

    def learn(self, secret: str) -> None:
        """A secret seen in traffic; only long enough ones are hunted in bodies (MIN_LEARNT_SECRET_LENGTH)."""
        if len(secret) >= MIN_LEARNT_SECRET_LENGTH:
            self.add(secret)

    def text(self, text: str, *, api: bool = False) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        if api:
            text = APP_PASSWORD_SHAPE.sub(REDACTED, text)
        return text

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        redacted = []
        for name, value in headers:
            if name.lower() in _REDACTED_HEADERS:
                credentials = parse_basic(value) if name.lower().endswith("authorization") else None
                if credentials:
                    self.learn(credentials[1])
                redacted.append((name, REDACTED))
            else:
                redacted.append((name, self.text(value)))
        return redacted

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.query:
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            parts = parts._replace(query=urlencode(self._fields(pairs), safe="/:@"))
        return self.text(urlunsplit(parts))

    def body(self, body: bytes, content_type: str, *, api: bool) -> bytes:
        """``body`` with secret fields and known secrets removed; bytes that are not UTF-8 are kept as they
        are (a calendar client never sends credentials in binary)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return body
        media_type = content_type.split(";", 1)[0].strip().lower()
        if (
            media_type == "application/json"
            or media_type.endswith("+json")
            or (api and text.lstrip().startswith(("{", "[")))
        ):
            text = self._json(text)
        elif media_type == "application/x-www-form-urlencoded":
            text = urlencode(self._fields(parse_qsl(text, keep_blank_values=True)))
        return self.text(text, api=api).encode("utf-8")

    def _fields(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        redacted = []
        for name, value in pairs:
            if _SECRET_NAME.search(name):
                self.learn(value)
                value = REDACTED
            redacted.append((name, value))
        return redacted

    def _json(self, text: str) -> str:
        try:
            document = json.loads(text)
        except ValueError:
            return text
        return json.dumps(self._json_value(document), ensure_ascii=False)

    def _json_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            cleaned = {}
            for key, item in value.items():
                if isinstance(key, str) and _SECRET_NAME.search(key) and item is not None:
                    if isinstance(item, str):
                        self.learn(item)
                    cleaned[key] = REDACTED
                else:
                    cleaned[key] = self._json_value(item)
            return cleaned
        if isinstance(value, list):
            return [self._json_value(item) for item in value]
        return value


@dataclass(frozen=True, slots=True)
class Capture:
    """An exchange as the middleware saw it: raw, unredacted, cheap to take on the event loop."""

    started: datetime
    method: str
    url: str
    http_version: str
    request_headers: list[tuple[str, str]]
    request_body: bytes | None  # None: not captured
    status: int
    reason: str
    response_headers: list[tuple[str, str]]
    response_body: bytes | None  # None: not captured (a streamed response)
    send_ms: float  # reading the request body
    wait_ms: float  # the handler's work


def har_entry(capture: Capture, redactor: Redactor) -> dict[str, Any]:
    """The HAR 1.2 entry of ``capture``, redacted."""
    api = urlsplit(capture.url).path.startswith("/api/")
    request_headers = redactor.headers(capture.request_headers)
    response_headers = redactor.headers(capture.response_headers)
    url = redactor.url(capture.url)
    request: dict[str, Any] = {
        "method": capture.method,
        "url": url,
        "httpVersion": capture.http_version,
        "cookies": [],
        "headers": har.name_values(request_headers),
        "queryString": har.name_values(parse_qsl(urlsplit(url).query, keep_blank_values=True)),
        "headersSize": -1,
        "bodySize": len(capture.request_body) if capture.request_body is not None else -1,
    }
    request_type = _header(capture.request_headers, "Content-Type")
    if capture.request_body:
        body = redactor.body(capture.request_body, request_type, api=api)
        request["postData"] = {"mimeType": request_type, **har.encode_body(body)}
    response_type = _header(capture.response_headers, "Content-Type")
    content: dict[str, Any] = {"mimeType": response_type}
    if capture.response_body is None:
        content.update({"size": -1, har.NOT_CAPTURED: True, "comment": "streamed response: body not recorded"})
    else:
        decoded = _decoded(capture.response_body, _header(capture.response_headers, "Content-Encoding"))
        body = redactor.body(decoded, response_type, api=api)
        content.update({"size": len(body), **har.encode_body(body)})
        if len(decoded) != len(capture.response_body):
            content["compression"] = len(decoded) - len(capture.response_body)
    response = {
        "status": capture.status,
        "statusText": capture.reason,
        "httpVersion": capture.http_version,
        "cookies": [],
        "headers": har.name_values(response_headers),
        "content": content,
        "redirectURL": redactor.text(_header(capture.response_headers, "Location")),
        "headersSize": -1,
        "bodySize": content["size"],
    }
    # Seen from the server, sending is reading the request body and waiting is the handler's work; the
    # transfer of the response happens after the middleware returns and is not measured.
    timings = {"send": round(capture.send_ms, 3), "wait": round(capture.wait_ms, 3), "receive": 0}
    return {
        "startedDateTime": capture.started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "time": round(capture.send_ms + capture.wait_ms, 3),
        "request": request,
        "response": response,
        "cache": {},
        "timings": timings,
    }


def _decoded(body: bytes, content_encoding: str) -> bytes:
    """The body a client reads: HAR keeps contents decoded (the engine passes Radicale's gzip through)."""
    encoding = content_encoding.strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, EOFError, zlib.error):
        logger.warning("response body announced as %s does not decode; recorded as sent", encoding)
    return body


def _header(headers: list[tuple[str, str]], name: str) -> str:
    lowered = name.lower()
    return next((value for key, value in headers if key.lower() == lowered), "")


_STOP = object()


class Recorder:
    """Appends HAR entries to one file from a writer thread. ``open`` and ``close`` block: call them in a
    thread from async code (:class:`RecordingControl` does)."""

    def __init__(self, path: Path, redactor: Redactor | None = None) -> None:
        self.path = path
        self.redactor = redactor or Redactor()
        self.entries_written = 0
        self._queue: queue.SimpleQueue[Capture | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._accepting = False
        head, _, tail = json.dumps(har.empty_log(), indent=1).rpartition("[]")
        self._head, self._tail = (head + "[").encode(), ("\n]" + tail + "\n").encode()

    @property
    def active(self) -> bool:
        return self._accepting

    def open(self) -> None:
        """Create (or truncate) the file as an empty HAR log and start the writer."""
        # Private to calrelay's user: even redacted, a recording holds calendar data.
        self._file = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
        self._file.write(self._head)
        self._end = self._file.tell()  # where the next entry goes, before the closing brackets
        self._file.write(self._tail)
        self._file.flush()
        self._thread = threading.Thread(target=self._run, name=f"har-writer:{self.path.name}", daemon=True)
        self._thread.start()
        self._accepting = True
        logger.info("recording HTTP exchanges to %s", self.path)

    def record(self, capture: Capture) -> None:
        """Queue an exchange; never blocks. An exchange that finishes after ``close`` began is dropped."""
        if self._accepting:
            self._queue.put(capture)

    def close(self) -> None:
        """Write everything queued, then close the file."""
        if self._thread is None:
            return
        self._accepting = False
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None
        self._file.close()
        logger.info("recorded %d exchanges to %s", self.entries_written, self.path)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while True:  # take whatever else is already queued: one file update per burst
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            entries = []
            for item in batch:
                if item is _STOP:
                    stopping = True
                    continue
                assert isinstance(item, Capture)
                try:
                    entries.append(har_entry(item, self.redactor))
                except Exception:  # one odd exchange must not end the recording
                    logger.exception("could not record %s %s", item.method, item.url)
            if entries:
                self._append(entries)

    def _append(self, entries: list[dict[str, Any]]) -> None:
        chunks = []
        for entry in entries:
            separator = ",\n" if self.entries_written + len(chunks) else "\n"
            chunks.append(separator + json.dumps(entry, indent=1, ensure_ascii=False))
        try:
            self._file.seek(self._end)
            self._file.write("".join(chunks).encode("utf-8"))
            self._end = self._file.tell()
            self._file.write(self._tail)
            self._file.truncate()
            self._file.flush()
        except OSError as error:
            logger.error("could not write %d exchanges to %s: %s", len(entries), self.path, error)
            return
        self.entries_written += len(entries)


@dataclass(slots=True)
class RecordingControl:
    """The recorder of an application: at most one recording at a time, started by ``--record`` or the API.

    ``redactor`` outlives recordings so that secrets registered once (with ``add_secret``) stay scrubbed.
    """

    redactor: Redactor = field(default_factory=Redactor)
    #: Where recordings started through the API go; None refuses API starts (``--record`` is not affected).
    folder: Path | None = None
    recorder: Recorder | None = None
    #: The last recording, kept after it stopped so that the status API can still report it.
    last: Recorder | None = None

    def add_secret(self, secret: str) -> None:
        self.redactor.add(secret)

    async def start(self, path: Path) -> Recorder:
        recorder = Recorder(path, self.redactor)
        await asyncio.to_thread(recorder.open)
        self.recorder = self.last = recorder
        return recorder

    async def stop(self) -> Recorder | None:
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            await asyncio.to_thread(recorder.close)
        return recorder

    def status(self) -> dict[str, Any]:
        current = self.recorder or self.last
        return {
            "active": self.recorder is not None,
            "path": str(current.path) if current else None,
            "entries": current.entries_written if current else 0,
        }


RECORDING = web.AppKey("calrelay.recording", RecordingControl)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def recorder_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Capture each exchange while a recording is active. Put it first (outermost) so that refusals by the
    other middlewares (401, 413) are recorded too."""
    control = request.app.get(RECORDING)
    recorder = control.recorder if control is not None else None
    if recorder is None or request.path == RECORDING_API_PATH:
        return await handler(request)
    started = datetime.now(UTC)
    begin = time.perf_counter()
    # Read the body now when its announced size is within the limit (aiohttp caches it for the handlers);
    # a body of unknown length is read after the handler, so that the limits middleware sees it first.
    length = request.content_length
    early = request.body_exists and length is not None and length <= request.client_max_size
    request_body: bytes | None = await request.read() if early else None
    read = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as error:
        recorder.record(await _capture(request, request_body, error, started, begin, read))
        raise
    except Exception:
        # aiohttp answers an unhandled error with a 500; the recording should show that it happened.
        failure = web.HTTPInternalServerError()
        recorder.record(await _capture(request, request_body, failure, started, begin, read))
        raise
    recorder.record(await _capture(request, request_body, response, started, begin, read))
    return response


async def _capture(
    request: web.Request,
    request_body: bytes | None,
    response: web.StreamResponse,
    started: datetime,
    begin: float,
    read: float,
) -> Capture:
    done = time.perf_counter()
    if request_body is None:
        request_body = await _late_body(request)
    return Capture(
        started=started,
        method=request.method,
        url=str(request.url),
        http_version=f"HTTP/{request.version.major}.{request.version.minor}",
        request_headers=list(request.headers.items()),
        request_body=request_body,
        status=response.status,
        reason=response.reason,
        response_headers=list(response.headers.items()),
        response_body=_response_body(response),
        send_ms=(read - begin) * 1000,
        wait_ms=(done - read) * 1000,
    )


def _response_body(response: web.StreamResponse) -> bytes | None:
    if not isinstance(response, web.Response):
        return None  # streamed: the body goes out as the handler writes it
    body = response.body
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    return None  # a payload object (a file, say), read only when it is sent


async def _late_body(request: web.Request) -> bytes | None:
    if not request.body_exists:
        return b""
    try:
        return await request.read()  # cached if a handler read it; otherwise the remaining stream
    except (web.HTTPException, ConnectionError):
        return None


def setup_recorder(
    app: web.Application, path: Path | None, *, secrets: Iterable[str] = (), folder: Path | None = None
) -> None:
    """Give ``app`` a recorder: record to ``path`` from startup when given, and serve the switch at
    ``/api/v1/recording``, which writes only inside ``folder``. Call it before the catch-all CalDAV route is
    added, which would otherwise win.

    ``recorder_middleware`` must be in the app's middlewares (first) for anything to be recorded.
    """
    control = RecordingControl(Redactor(secrets), folder)
    app[RECORDING] = control
    app.router.add_get(RECORDING_API_PATH, recording_status)
    app.router.add_post(RECORDING_API_PATH, recording_switch)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if path is not None:
            await control.start(path)
        yield
        # After the server stopped taking requests and in-flight ones finished: nothing is lost.
        await control.stop()

    app.cleanup_ctx.append(lifecycle)


def recording_path(folder: Path, raw: str) -> Path | None:
    """Where an API recording named ``raw`` goes: a name or path inside ``folder`` (relative names are taken
    from it), symbolic links resolved; None for anything that ends up outside it. A service account may
    choose the file, never a place elsewhere on the server."""
    base = folder.resolve()
    path = (base / raw).resolve()
    if path == base or not path.is_relative_to(base) or (path.parent != base and not path.parent.is_dir()):
        return None
    return path


def _service_only(request: web.Request) -> web.Response | None:
    principal = principal_of(request)
    if principal.is_service:
        return None
    return json_error(403, f"user {principal.name!r} may not control recording: use a service account")


async def recording_status(request: web.Request) -> web.Response:
    """``GET /api/v1/recording``: ``{"active": …, "path": …, "entries": …}``."""
    refusal = _service_only(request)
    if refusal is not None:
        return refusal
    return web.json_response(request.app[RECORDING].status())


async def recording_switch(request: web.Request) -> web.Response:
    """``POST /api/v1/recording`` with ``{"action": "start", "path": "/abs/file.har"}`` or
    ``{"action": "stop"}``; answers with the status."""
    refusal = _service_only(request)
    if refusal is not None:
        return refusal
    control = request.app[RECORDING]
    try:
        command = await request.json()
    except ValueError:
        return json_error(400, 'send a JSON object: {"action": "start", "path": "..."} or {"action": "stop"}')
    action = command.get("action") if isinstance(command, dict) else None
    if action == "start":
        if control.recorder is not None:
            return json_error(409, "already recording: stop first", path=str(control.recorder.path))
        raw_path = command.get("path")
        if control.folder is None:
            return json_error(403, "recording through the API is switched off on this server")
        if not isinstance(raw_path, str) or not raw_path.strip():
            return json_error(400, f"'path' must name a file in the recordings folder {str(control.folder)!r}, "
                              "e.g. session.har")
        path = recording_path(control.folder, raw_path)
        if path is None:
            return json_error(400, f"recordings go into {str(control.folder)!r} (set by [recorder] folder): "
                              f"{raw_path!r} is outside it; send a file name such as session.har")
        try:
            await asyncio.to_thread(private_dir, control.folder)
            await control.start(path)
        except OSError as error:
            return json_error(400, f"cannot write {raw_path!r}: {error.strerror or error}")
    elif action == "stop":
        if control.recorder is None:
            return json_error(409, "not recording")
        await control.stop()
    else:
        return json_error(400, '\'action\' must be "start" or "stop"')
    return web.json_response(control.status())
