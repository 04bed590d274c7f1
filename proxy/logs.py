"""Logs for people: a plain-words summary of each relay pass, and optional JSON log lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

#: (stats key, singular, plural) in the order a summary names them.
_PHRASES = (
    ("pushed", "pushed {}", "pushed {}"),
    ("deleted", "deleted {} from iCloud", "deleted {} from iCloud"),
    ("imported", "imported {}", "imported {}"),
    ("refreshed", "refreshed {}", "refreshed {}"),
    ("applied", "applied {} iCloud edit", "applied {} iCloud edits"),
    ("kept", "kept {} iCloud deletion", "kept {} iCloud deletions"),
    ("not_imported", "could not import {} iCloud event (see calrelay activity)",
     "could not import {} iCloud events (see calrelay activity)"),
)


def pass_summary(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    """What one relay pass did, e.g. "pushed 3, imported 12, kept 1 iCloud deletion" ("" when nothing)."""
    parts = []
    for key, one, many in _PHRASES:
        count = after.get(key, 0) - before.get(key, 0)
        if count:
            parts.append((one if count == 1 else many).format(count))
    return ", ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def use_json(enabled: bool) -> None:
    """Switch the root logger's handlers to JSON lines (``[logging] json``)."""
    if enabled:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
