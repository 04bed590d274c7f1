"""The file layout's ``state.sqlite3``, as calrelay wrote it before the SQL database (schema frozen here, the
format ``calrelay db import-files`` reads)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

LEGACY_SCHEMA = """
CREATE TABLE links (
    user TEXT PRIMARY KEY, apple_id TEXT NOT NULL, server_url TEXT NOT NULL, secret BLOB NOT NULL,
    mode TEXT NOT NULL, deletions TEXT NOT NULL, calendars TEXT NOT NULL, state TEXT NOT NULL, last_error TEXT,
    last_error_at REAL, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE link_calendars (
    user TEXT NOT NULL REFERENCES links(user) ON DELETE CASCADE, remote_url TEXT NOT NULL,
    remote_name TEXT NOT NULL, display_name TEXT NOT NULL, role TEXT NOT NULL, blocks INTEGER NOT NULL,
    mirror_path TEXT NOT NULL, ctag TEXT, sync_token TEXT, token_state TEXT NOT NULL DEFAULT 'none',
    last_success_at REAL, last_attempt_at REAL, last_error TEXT, PRIMARY KEY (user, remote_url)
);
CREATE TABLE items (
    user TEXT NOT NULL, calendar_url TEXT NOT NULL, uid TEXT NOT NULL, origin TEXT NOT NULL, local_path TEXT,
    local_href TEXT, local_etag TEXT, local_hash TEXT, remote_href TEXT, remote_etag TEXT, remote_hash TEXT,
    updated_at REAL NOT NULL, PRIMARY KEY (user, calendar_url, uid)
);
CREATE INDEX items_by_remote_href ON items (user, remote_href);
CREATE TABLE sync_requests (user TEXT PRIMARY KEY, requested_at REAL NOT NULL);
CREATE TABLE pending (
    user TEXT NOT NULL, uid TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL,
    first_at REAL NOT NULL, last_at REAL NOT NULL, PRIMARY KEY (user, uid)
);
"""


def write_legacy_state(path: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.executescript(LEGACY_SCHEMA)
        for table, table_rows in rows.items():
            # Columns added since the file layout (e.g. links.policies) did not exist in it: the import must
            # fill in their defaults.
            legacy_columns = {column[1] for column in connection.execute(f"PRAGMA table_info({table})")}
            for row in table_rows:
                row = {name: value for name, value in row.items() if name in legacy_columns}
                names = list(row)
                connection.execute(
                    f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                    [int(v) if isinstance(v, bool) else v for v in row.values()],
                )
        connection.commit()
    finally:
        connection.close()
