"""HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/): the parts calrelay writes and reads.

Shared by the recorder, which writes entries, and replay, which reads them back. Pure: no I/O beyond
reading the file in :func:`load`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy import __version__

HAR_VERSION = "1.2"
#: Custom field (HAR allows fields starting with "_") marking a body the recorder could not keep.
NOT_CAPTURED = "_notCaptured"


class HarError(ValueError):
    """The file is not a HAR recording calrelay can replay; the message says where and why."""


def encode_body(body: bytes) -> dict[str, str]:
    """``text`` (and ``encoding: base64`` when the bytes are not UTF-8), as HAR stores contents."""
    try:
        return {"text": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"text": base64.b64encode(body).decode("ascii"), "encoding": "base64"}


def decode_body(content: dict[str, Any] | None) -> bytes:
    if not content or content.get("text") is None:
        return b""
    text = content["text"]
    if not isinstance(text, str):
        raise HarError("body text is not a string")
    if content.get("encoding") == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as error:
            raise HarError(f"body is not valid base64: {error}") from error
    return text.encode("utf-8")


def name_values(pairs: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in pairs]


@dataclass(frozen=True, slots=True)
class Message:
    """A request or a response as replay needs it. ``captured`` is false when the recorder could not keep
    the body (a streamed response): there is then nothing to compare it with."""

    headers: tuple[tuple[str, str], ...]
    body: bytes
    captured: bool = True

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One recorded entry: ``number`` counts from 1 in file order, as the replay report shows it."""

    number: int
    method: str
    url: str
    request: Message
    status: int
    response: Message


def creator() -> dict[str, str]:
    return {"name": "calrelay", "version": __version__}


def empty_log(comment: str = "") -> dict[str, Any]:
    log: dict[str, Any] = {"version": HAR_VERSION, "creator": creator(), "entries": []}
    if comment:
        log["comment"] = comment
    return {"log": log}


def load(path: Path) -> list[Exchange]:
    """The entries of a HAR file, in file order; HarError when it cannot be read or is not a HAR log."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise HarError(f"cannot read {path}: {error.strerror or error}") from error
    except ValueError as error:
        raise HarError(f"{path} is not JSON: {error}") from error
    return parse(document)


def parse(document: Any) -> list[Exchange]:
    if not isinstance(document, dict) or not isinstance(document.get("log"), dict):
        raise HarError("not a HAR file: no top-level 'log' object")
    entries = document["log"].get("entries")
    if not isinstance(entries, list):
        raise HarError("not a HAR file: 'log.entries' is not a list")
    return [_exchange(number, entry) for number, entry in enumerate(entries, 1)]


def _exchange(number: int, entry: Any) -> Exchange:
    try:
        request, response = entry["request"], entry["response"]
        return Exchange(
            number=number,
            method=str(request["method"]).upper(),
            url=str(request["url"]),
            request=Message(_headers(request), decode_body(request.get("postData"))),
            status=int(response["status"]),
            response=Message(
                _headers(response),
                decode_body(response.get("content")),
                captured=not response.get("content", {}).get(NOT_CAPTURED, False),
            ),
        )
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, HarError):
            raise HarError(f"entry {number}: {error}") from error
        raise HarError(f"entry {number}: missing or malformed {error}") from error


def _headers(message: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((str(header["name"]), str(header["value"])) for header in message.get("headers", []))
