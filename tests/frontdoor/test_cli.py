"""The command line, run as a user runs it: ``python -m proxy`` in a subprocess."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import caldav
import requests

from proxy import config
from proxy.cluster.users_db import UsersTable
from proxy.database import create_engine, is_sqlite


def calrelay(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_users_add_list_remove(tmp_path):
    data = str(tmp_path / "data")
    added = calrelay("users", "add", "alice", "--password-stdin", "--data", data, stdin="s3cret\n")
    assert added.returncode == 0, added.stderr
    assert calrelay("users", "add", "crm", "--service", "--password-stdin", "--data", data, stdin="x\n").returncode == 0
    # The users are in the database, as bcrypt hashes (on SQLite, a private file without the password).
    assert not (tmp_path / "data" / "users").exists()
    url = config.load(None, {"storage": {"data_dir": data}}).database_url
    table = UsersTable(create_engine(url))
    try:
        assert table.records()["alice"].password_hash.startswith(b"$2b$")
    finally:
        table.engine.dispose()
    if is_sqlite(url):
        database = tmp_path / "data" / "calrelay.db"
        assert database.stat().st_mode & 0o077 == 0 and b"s3cret" not in database.read_bytes()
    listing = calrelay("users", "list", "--data", data)
    assert listing.stdout.splitlines() == ["alice\tuser", "crm\tservice"]
    assert calrelay("users", "remove", "alice", "--data", data).returncode == 0
    assert calrelay("users", "list", "--data", data).stdout.splitlines() == ["crm\tservice"]
    missing = calrelay("users", "remove", "alice", "--data", data)
    assert missing.returncode == 1 and "no user 'alice'" in missing.stderr
    bad = calrelay("users", "add", "../evil", "--password-stdin", "--data", data, stdin="x\n")
    assert bad.returncode == 2 and "invalid user name" in bad.stderr


def test_bad_config_stops_with_a_message(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nprot = 1\n")
    result = calrelay("serve", "--config", str(path))
    assert result.returncode == 2
    assert "unknown key server.prot" in result.stderr


def test_serve_answers_and_stops_gracefully_on_sigterm(tmp_path):
    data = str(tmp_path / "data")
    calrelay("users", "add", "alice", "--password-stdin", "--data", data, stdin="pw\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--data", data, "--port", str(port),
         "--emulator-port", "0", "--emulator-partition-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        principal = caldav.DAVClient(url=url, username="alice", password="pw").principal()
        principal.make_calendar(name="Work", cal_id="work")
        assert [c.get_display_name() for c in principal.calendars()] == ["Work"]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in output
    assert "relay stopped; nothing pending for iCloud" in output and "calrelay stopped" in output
