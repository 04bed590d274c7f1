"""``calrelay db import-files DIR``: a data directory of the file layout, taken into the configured storage.

The file layout is what calrelay wrote before its SQL database: Radicale's multifilesystem collections under
``DIR/collections``, the relay's state in ``DIR/state.sqlite3`` and the users in ``DIR/users``. The import

- reads the collections with Radicale's own multifilesystem storage and writes them through Radicale's storage
  API of the *configured* storage plugin (whatever ``calrelay serve`` would use), so every collection keeps its
  path and properties, and every item its href and text byte for byte (hence its ETag, which the relay's
  status refers to);
- copies every row of the relay's state (links, their calendars with pull state and sync tokens, item status,
  pending work, sync requests) into the database, as they are;
- copies the users of ``DIR/users`` (names, bcrypt hashes, service flags) into the database's users, replacing
  same-named ones and keeping the others;
- keeps the stored iCloud passwords usable: the source's ``secret.key`` is copied when the target has none,
  and the passwords are re-encrypted with the target's key when it has a different one.

It is idempotent: a collection is written anew (its properties and items replace what the target holds at
that path), and state rows replace those with the same keys. The source is only read. Run it with the server
stopped, so that nothing writes the source meanwhile.

Every item is checked against today's write-time rules (``[limits]``, the CRM rules) *before* anything is
written: a file layout may hold objects that an older calrelay accepted and this one refuses (a ``SECONDLY``
rule, an object past the instance cap). By default such a directory is not imported at all, and every refused
item is named with its reason. With ``skip_invalid`` those items are left out instead, together with the relay
state that refers to them (their item status and pending work), and the report lists them; the source keeps
them. Their iCloud copies, if any, stay in iCloud, and a pull refuses them by the same rules.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import radicale.storage
from radicale import config as radicale_config
from radicale import item as radicale_item
from radicale import pathutils

from plugins.rules import validate_item
from proxy.auth import UsersFile
from proxy.cluster.users_db import open_users
from proxy.config import Settings
from proxy.database import create_engine
from proxy.engine import radicale_configuration
from proxy.secretbox import KEY_ENVIRONMENT_VARIABLE, SecretBox
from proxy.state import FILE_LAYOUT_TABLES, StateDB

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, what) -> None


class FileImportError(Exception):
    """The directory cannot be imported; the message says why and what to do."""


@dataclass(frozen=True)
class Refused:
    """An item of the source that today's write-time rules refuse."""

    collection: str  # the collection's path, no slashes around
    href: str
    uid: str
    reason: str

    def __str__(self) -> str:
        return f"/{self.collection}/{self.href}: {self.reason}"


@dataclass
class ImportReport:
    collections: int = 0
    items: int = 0
    state_rows: dict[str, int] = field(default_factory=dict)
    reencrypted: int = 0
    users: int = 0
    #: Items left out (``skip_invalid``), with the reason.
    skipped: list[Refused] = field(default_factory=list)


#: Refused items named in the error of an import that was not done; the rest are counted.
_NAMED_REFUSALS = 20


def import_files(source: Path, settings: Settings, progress: Progress | None = None, *,
                 skip_invalid: bool = False) -> ImportReport:
    source = source.resolve()
    collections_dir = source / "collections"
    state_file = source / "state.sqlite3"
    users_file = source / "users"
    if not (collections_dir / "collection-root").is_dir() and not state_file.is_file() and not users_file.is_file():
        raise FileImportError(
            f"{source} is not a calrelay data directory of the file layout: it has neither "
            "collections/collection-root/ nor state.sqlite3 nor users"
        )
    report = ImportReport()
    if (collections_dir / "collection-root").is_dir():
        _import_collections(collections_dir, settings, report, progress or _quiet, skip_invalid)
    if state_file.is_file():
        _import_state(source, state_file, settings, report)
    if users_file.is_file():
        database = create_engine(settings.database_url, pool_size=1)
        try:
            # open_users imports the *configured* users file (once); DIR/users is only read.
            report.users = open_users(settings, database).import_file(UsersFile(users_file))
        finally:
            database.dispose()
    return report


def _quiet(done: int, total: int, what: str) -> None:
    pass


# -- collections ----------------------------------------------------------------------------------------------


def _source_storage(collections_dir: Path) -> radicale.storage.BaseStorage:
    configuration = radicale_config.load()
    configuration.update(
        # Reading builds Radicale's item cache beside the files; it is only a cache, so it is not fsynced.
        {"storage": {"type": "multifilesystem", "filesystem_folder": str(collections_dir),
                     "_filesystem_fsync": "False"}}, "import", privileged=True
    )
    return radicale.storage.load(configuration)


def _walk(storage: radicale.storage.BaseStorage, path: str = "/") -> Iterator[radicale.storage.BaseCollection]:
    """Every collection below ``path``, parents before their children."""
    entries = iter(storage.discover(path, depth="1"))
    next(entries, None)  # the collection at ``path`` itself
    children = [entry for entry in entries if isinstance(entry, radicale.storage.BaseCollection)]
    for child in sorted(children, key=lambda c: c.path):
        yield child
        yield from _walk(storage, pathutils.unstrip_path(child.path, True))


def _item_count(collection_dir: Path) -> int:
    return sum(1 for entry in os.scandir(collection_dir) if entry.is_file() and not entry.name.startswith("."))


def _import_collections(collections_dir: Path, settings: Settings, report: ImportReport, progress: Progress,
                        skip_invalid: bool) -> None:
    target = radicale.storage.load(radicale_configuration(settings))
    try:
        _copy_collections(collections_dir, settings, target, report, progress, skip_invalid)
    finally:
        target.close()


def _copy_collections(collections_dir: Path, settings: Settings, target: Any, report: ImportReport,
                      progress: Progress, skip_invalid: bool) -> None:
    source = _source_storage(collections_dir)
    with source.acquire_lock("r"):
        collections = list(_walk(source))
        root = collections_dir / "collection-root"
        total = sum(_item_count(root / c.path) for c in collections)
        # Checked first, all of them: an import that is refused writes nothing.
        progress(0, total, "items checked")
        copies: dict[str, list[tuple[str, radicale_item.Item]]] = {}
        checked = 0
        for collection in collections:
            copies[collection.path] = []
            for item in collection.get_all():
                assert item.href is not None
                copy = radicale_item.Item(
                    collection_path=collection.path, vobject_item=item.vobject_item, text=item.serialize()
                )
                copy.prepare()
                try:
                    validate_item(copy, settings.limits, settings.storage.max_occurrences)
                except ValueError as error:
                    report.skipped.append(Refused(collection.path, item.href, copy.uid, str(error)))
                else:
                    copies[collection.path].append((item.href, copy))
                checked += 1
                progress(checked, total, "items checked")
        if report.skipped and not skip_invalid:
            raise FileImportError(_refusal_message(report.skipped))
        written = sum(len(items) for items in copies.values())
        progress(0, written, "items")
        for collection in collections:
            path = pathutils.unstrip_path(collection.path, True)
            user = collection.path.split("/", 1)[0]
            props = dict(collection.get_meta())
            with target.acquire_lock("w", user):
                target.create_collection(path, props=props or None)
                stored = next(iter(target.discover(path)))
                assert isinstance(stored, radicale.storage.BaseCollection)
                for href, copy in copies[collection.path]:
                    stored.upload(href, copy)
                    report.items += 1
                    progress(report.items, written, "items")
            report.collections += 1


def _refusal_message(refused: list[Refused]) -> str:
    named = "\n".join(f"  {item}" for item in refused[:_NAMED_REFUSALS])
    more = f"\n  ... and {len(refused) - _NAMED_REFUSALS} more" if len(refused) > _NAMED_REFUSALS else ""
    return (
        f"nothing imported: {len(refused)} item(s) are refused by this calrelay's rules:\n{named}{more}\n"
        "Fix or delete them in the source directory, or run again with --skip-invalid to leave them out "
        "(with their relay status and pending work; the source keeps them)."
    )


# -- relay state ----------------------------------------------------------------------------------------------


def _read_state(state_file: Path) -> dict[str, list[dict[str, Any]]]:
    connection = sqlite3.connect(f"file:{state_file}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        present = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {
            name: [dict(row) for row in connection.execute(f"SELECT * FROM {name}")]  # the names are ours, not input
            for name in FILE_LAYOUT_TABLES
            if name in present
        }
    finally:
        connection.close()


def _import_state(source: Path, state_file: Path, settings: Settings, report: ImportReport) -> None:
    rows = _without_skipped(_read_state(state_file), report.skipped)
    for calendar in rows.get("link_calendars", []):
        calendar["blocks"] = bool(calendar["blocks"])
    links = rows.get("links", [])
    if links:
        report.reencrypted = _carry_secrets(source, settings.storage.data_dir.resolve(), links)
    db = StateDB(settings.database_url)
    try:
        db.import_rows(rows)
    finally:
        db.close()
    report.state_rows = {name: len(table_rows) for name, table_rows in rows.items()}


def _without_skipped(rows: dict[str, list[dict[str, Any]]], skipped: list[Refused]) -> dict[str, list[dict[str, Any]]]:
    """The state rows that do not refer to an item left out: its status would say the CRM deleted it."""
    if not skipped:
        return rows
    items = {(refused.collection, refused.href) for refused in skipped}
    uids = {(refused.collection.split("/", 1)[0], refused.uid) for refused in skipped}
    kept = dict(rows)
    kept["items"] = [row for row in rows.get("items", [])
                     if ((row["local_path"] or "").strip("/"), row["local_href"]) not in items]
    kept["pending"] = [row for row in rows.get("pending", []) if (row["user"], row["uid"]) not in uids]
    return kept


def _carry_secrets(source: Path, target: Path, links: list[dict[str, Any]]) -> int:
    """Make the links' encrypted passwords readable with the target's key; how many were re-encrypted."""
    source_key, target_key = source / "secret.key", target / "secret.key"
    if os.environ.get(KEY_ENVIRONMENT_VARIABLE) or source_key == target_key or not source_key.exists():
        return 0  # one key for both (or none to carry: the links keep what they have)
    if not target_key.exists():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_key, target_key)
        target_key.chmod(0o600)
        return 0
    if source_key.read_bytes().strip() == target_key.read_bytes().strip():
        return 0
    old, new = SecretBox.for_data_dir(source), SecretBox.for_data_dir(target)
    for link in links:
        link["secret"] = new.encrypt(old.decrypt(link["secret"]))
    return len(links)
