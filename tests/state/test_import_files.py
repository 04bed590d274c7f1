"""``calrelay db import-files``: a data directory made by a running calrelay (users, a link to the emulator,
relayed appointments, a pulled iCloud event, refused work pending) in the file layout, imported into a fresh
data directory on each backend; every collection, property, item, link, status and pending entry compared."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import radicale.storage
import sqlalchemy as sa
from radicale import config as radicale_config
from radicale import item as radicale_item
from radicale import pathutils

from proxy import cli, config
from proxy.auth import Authenticator
from proxy.cluster.users_db import UsersTable
from proxy.config import AuthSettings
from proxy.database import create_engine
from proxy.engine import radicale_configuration
from proxy.keys import STATE
from proxy.secretbox import SecretBox
from proxy.state import FILE_LAYOUT_TABLES, StateDB
from tests.helpers import event, put
from tests.relay.conftest import APP_PASSWORD, make_linked, stored_events, wait_until
from tests.relay.test_pull import icloud_put
from tests.state.legacy_layout import write_legacy_state

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _collections(storage: radicale.storage.BaseStorage) -> dict[str, tuple[dict[str, str], dict[str, tuple]]]:
    """path -> (props, href -> (etag, text)) of every collection."""
    result = {}

    def walk(path: str) -> None:
        entries = iter(storage.discover(path, depth="1"))
        next(entries, None)
        for entry in entries:
            if isinstance(entry, radicale.storage.BaseCollection):
                child = pathutils.unstrip_path(entry.path, True)
                items = {item.href: (item.etag, item.serialize()) for item in entry.get_all()}
                result[child] = (dict(entry.get_meta()), items)
                walk(child)

    with storage.acquire_lock("r"):
        walk("/")
    return result


def _file_storage(collections: Path) -> radicale.storage.BaseStorage:
    configuration = radicale_config.load()
    configuration.update({"storage": {"type": "multifilesystem", "filesystem_folder": str(collections)}}, "t",
                         privileged=True)
    return radicale.storage.load(configuration)


def _write_file_layout(collections: dict[str, tuple[dict[str, str], dict[str, tuple]]], folder: Path) -> None:
    """Write ``collections`` (see :func:`_collections`) with Radicale's multifilesystem storage."""
    storage = _file_storage(folder)
    with storage.acquire_lock("w"):
        for path, (props, items) in sorted(collections.items()):
            storage.create_collection(path, props=props or None)
            collection = next(iter(storage.discover(path)))
            for href, (_etag, text) in items.items():
                item = radicale_item.Item(collection_path=path.strip("/"), text=text)
                item.prepare()
                collection.upload(href, item)


def _state_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    db = StateDB(url)
    try:
        with db.engine.connect() as connection:
            return {
                name: sorted((dict(row._mapping) for row in connection.execute(sa.select(table))), key=repr)
                for name, table in FILE_LAYOUT_TABLES.items()
            }
    finally:
        db.close()


def _make_file_layout(calrelay_factory, tmp_path: Path) -> tuple[Path, dict, dict]:
    relay = calrelay_factory(data_dir=tmp_path / "live", overrides={
        "upstream": {"poll_interval": 1.0, "min_backoff": 0.2, "max_backoff": 1.0},
    })
    linked = make_linked(relay)
    crm = relay.auth("crm")
    for number in range(3):
        body = event(f"appt-{number}", START + timedelta(days=number), summary=f"Call {number}")
        assert put(relay.url + f"alice/sales/appt-{number}.ics", crm, body).status_code == 201
    icloud_put(linked, "home", "dup.ics", event("dup", START + timedelta(days=5)))
    icloud_put(linked, "work", "lunch.ics", event("lunch", START + timedelta(days=6), summary="Lunch"))
    wait_until(lambda: {"appt-0", "appt-1", "appt-2", "lunch"} <= set(stored_events(linked.emulator)),
               message="appointments relayed")
    # iCloud holds UID "dup" in another calendar: refused, it stays pending with its reason.
    assert put(relay.url + "alice/sales/dup.ics", crm, event("dup", START + timedelta(days=5))).status_code == 201
    wait_until(lambda: [p["uid"] for p in linked.status()["pending"]] == ["dup"]
               and "refused" in linked.status()["pending"][0]["reason"], message="refused work pending")
    # Both iCloud events pulled into their mirrors: five statuses in all.
    wait_until(lambda: len(relay.app[STATE].db.items("alice")) == 5, message="pulled")
    relay.server.stop()

    collections = _collections(radicale.storage.load(radicale_configuration(relay.settings)))
    state = _state_rows(relay.settings.database_url)
    assert state["links"] and state["link_calendars"] and len(state["items"]) == 5 and state["pending"]
    assert any("lunch" in text for _, items in collections.values() for _, text in items.values())
    # The file layout: the same collections and users, the state in state.sqlite3.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    _write_file_layout(collections, legacy / "collections")
    shutil.copy2(relay.data_dir / "secret.key", legacy / "secret.key")
    # The server imported its users file into the database at start and kept it as users.imported.
    shutil.copy2(relay.data_dir / "users.imported", legacy / "users")
    write_legacy_state(legacy / "state.sqlite3", state)
    # The file layout predates per-link policies: its links import with the configured defaults.
    state["links"] = [{**link, "policies": "{}"} for link in state["links"]]
    return legacy, collections, state


def test_import_files_keeps_everything(calrelay_factory, tmp_path, database_url, capsys):
    legacy, collections, state = _make_file_layout(calrelay_factory, tmp_path)
    target = tmp_path / "target"
    config_file = tmp_path / "calrelay.toml"
    config_file.write_text(f'[storage]\ndata_dir = "{target}"\ndatabase = "{database_url}"\n')

    assert cli.main(["db", "import-files", str(legacy), "--config", str(config_file)]) == 0
    output = capsys.readouterr()
    assert "] " in output.err and "items" in output.err  # the progress bar
    assert f"{sum(len(items) for _, items in collections.values())} items" in output.out

    settings = config.load(config_file)
    imported = _collections(radicale.storage.load(radicale_configuration(settings)))
    assert imported == collections  # every path, property, href, ETag and text
    assert _state_rows(database_url) == state  # every link, calendar, status, pending entry, as it was
    (link,) = state["links"]
    assert SecretBox.for_data_dir(target).decrypt(link["secret"]) == APP_PASSWORD  # the key came along
    assert "3 users" in output.out and (legacy / "users").is_file()  # the source is only read
    table = UsersTable(create_engine(database_url))
    try:
        users = table.records()
        assert sorted(users) == ["alice", "bob", "crm"] and users["crm"].is_service
        assert Authenticator(table, AuthSettings()).check("alice", "alice-secret") is not None
    finally:
        table.engine.dispose()

    # Again: idempotent, nothing doubled.
    assert cli.main(["db", "import-files", str(legacy), "--config", str(config_file), "--quiet"]) == 0
    assert _collections(radicale.storage.load(radicale_configuration(settings))) == collections
    assert _state_rows(database_url) == state


def test_import_files_reencrypts_for_a_target_with_its_own_key(calrelay_factory, tmp_path):
    legacy, _, state = _make_file_layout(calrelay_factory, tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    SecretBox.for_data_dir(target)  # the target made its own key
    assert cli.main(["db", "import-files", str(legacy), "--data", str(target), "--quiet"]) == 0
    (link,) = _state_rows(config.load(None, {"storage": {"data_dir": str(target)}}).database_url)["links"]
    assert link["secret"] != state["links"][0]["secret"]
    assert SecretBox.for_data_dir(target).decrypt(link["secret"]) == APP_PASSWORD


def test_import_files_refuses_what_is_not_a_data_directory(tmp_path, capsys):
    assert cli.main(["db", "import-files", str(tmp_path), "--data", str(tmp_path / "t")]) == 1
    assert "not a calrelay data directory" in capsys.readouterr().err


def test_import_files_in_place_takes_everything_and_leaves_the_files(calrelay_factory, tmp_path, capsys):
    legacy, collections, state = _make_file_layout(calrelay_factory, tmp_path)
    assert cli.main(["db", "import-files", str(legacy), "--data", str(legacy), "--quiet"]) == 0
    assert f"{len(collections)} collections" in capsys.readouterr().out
    settings = config.load(None, {"storage": {"data_dir": str(legacy)}})
    assert _collections(radicale.storage.load(radicale_configuration(settings))) == collections
    assert _collections(_file_storage(legacy / "collections")) == collections  # the source is only read
    assert _state_rows(config.load(None, {"storage": {"data_dir": str(legacy)}}).database_url) == state


def _layout_with_a_runaway_rule(tmp_path: Path) -> Path:
    """A file layout an older calrelay accepted: one ordinary appointment and one with a SECONDLY rule (refused
    today), each with its relay status, and pending work for the refused one."""
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    good = event("good", START)
    bad = event("bad", START + timedelta(days=1), extra="RRULE:FREQ=SECONDLY\r\n")
    _write_file_layout({
        "/alice/": ({}, {}),
        "/alice/sales/": ({"tag": "VCALENDAR"}, {"good.ics": ("", good), "bad.ics": ("", bad)}),
    }, legacy / "collections")
    status = {"user": "alice", "calendar_url": "https://icloud/home/", "origin": "crm",
              "local_path": "/alice/sales/", "local_etag": "e", "local_hash": "h", "remote_href": None,
              "remote_etag": None, "remote_hash": None, "updated_at": 1.0}
    write_legacy_state(legacy / "state.sqlite3", {
        "items": [{**status, "uid": uid, "local_href": f"{uid}.ics"} for uid in ("good", "bad")],
        "pending": [{"user": "alice", "uid": "bad", "action": "create", "reason": "upstream 503", "attempts": 1,
                     "first_at": 1.0, "last_at": 1.0}],
    })
    return legacy


def test_import_files_names_items_refused_by_todays_rules_and_writes_nothing(tmp_path, capsys):
    legacy = _layout_with_a_runaway_rule(tmp_path)
    target = tmp_path / "target"
    assert cli.main(["db", "import-files", str(legacy), "--data", str(target), "--quiet"]) == 1
    error = capsys.readouterr().err
    assert "nothing imported: 1 item(s)" in error and "/alice/sales/bad.ics: " in error and "SECONDLY" in error
    assert "--skip-invalid" in error
    settings = config.load(None, {"storage": {"data_dir": str(target)}})
    assert "/alice/sales/" not in _collections(radicale.storage.load(radicale_configuration(settings)))
    assert _state_rows(settings.database_url)["items"] == []


def test_import_files_skip_invalid_leaves_out_the_item_and_its_state(tmp_path, capsys):
    legacy = _layout_with_a_runaway_rule(tmp_path)
    target = tmp_path / "target"
    assert cli.main(["db", "import-files", str(legacy), "--data", str(target), "--quiet", "--skip-invalid"]) == 0
    out = capsys.readouterr().out
    assert "1 items" in out and "left out 1 refused item(s)" in out and "/alice/sales/bad.ics: " in out
    settings = config.load(None, {"storage": {"data_dir": str(target)}})
    _, items = _collections(radicale.storage.load(radicale_configuration(settings)))["/alice/sales/"]
    assert set(items) == {"good.ics"}
    state = _state_rows(settings.database_url)
    assert [row["uid"] for row in state["items"]] == ["good"] and state["pending"] == []
