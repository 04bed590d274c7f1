"""What a new user hit trying calrelay from its README (issue 12): one test per finding.

The command line runs as a user runs it (``python -m proxy`` in a subprocess); HTTP goes to a running server.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import caldav
import requests

from proxy import database
from proxy.keys import EMULATOR
from tests.helpers import free_port, mkcalendar

APPLE_ID = "demo@icloud.test"
APP_PASSWORD = "abcd-efgh-ijkl-mnop"


def calrelay(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], input=stdin, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL if stdin is None else None,
    )


@contextmanager
def serving(data: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``calrelay serve`` in a subprocess on free ports (its emulator too); yields its URL and process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--data", str(data), "--port", str(port),
         "--emulator-port", "0", "--emulator-partition-port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"calrelay serve did not start: {process.communicate()[0]}") from None
                time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def link(relay, user: str, as_user: str | None = None, **body) -> requests.Response:
    payload = {"apple_id": APPLE_ID, "app_password": APP_PASSWORD, "primary": "work", **body}
    return requests.put(
        relay.url + f"api/v1/users/{user}/link", json=payload, auth=relay.auth(as_user or user), timeout=30
    )


# -- 1. users add never replaces an account, or its role, by accident -------------------------------------


def test_users_add_refuses_an_existing_name_and_passwd_keeps_the_role(tmp_path):
    data = str(tmp_path / "data")
    first = calrelay("users", "add", "crm", "--service", "--password-stdin", "--data", data, stdin="one\n")
    assert first.returncode == 0, first.stderr
    again = calrelay("users", "add", "crm", "--password-stdin", "--data", data, stdin="two\n")
    assert again.returncode == 1 and "already exists" in again.stderr and "users passwd crm" in again.stderr
    demote = calrelay("users", "add", "crm", "--force", "--password-stdin", "--data", data, stdin="two\n")
    assert demote.returncode == 1 and "service account" in demote.stderr
    assert calrelay("users", "list", "--data", data).stdout.splitlines() == ["crm\tservice"]
    changed = calrelay("users", "passwd", "crm", "--password-stdin", "--data", data, stdin="three\n")
    assert changed.returncode == 0, changed.stderr
    assert calrelay("users", "list", "--data", data).stdout.splitlines() == ["crm\tservice"]
    with serving(tmp_path / "data") as (url, _):
        assert requests.get(url + "crm/", auth=("crm", "one"), timeout=10).status_code == 401
        assert requests.request("PROPFIND", url + "crm/", auth=("crm", "three"), timeout=10).status_code == 207
    forced = calrelay("users", "add", "crm", "--force", "--service", "--password-stdin", "--data", data, stdin="4\n")
    assert forced.returncode == 0, forced.stderr
    assert calrelay("users", "passwd", "nobody", "--password-stdin", "--data", data, stdin="x\n").returncode == 1


# -- 2. an unknown user is a 404, never an empty calendar -------------------------------------------------


def test_unknown_users_get_404_on_every_per_user_endpoint(calrelay):
    crm = calrelay.auth("crm")
    for path in (
        "availability?start=2026-12-01T00:00:00Z&end=2026-12-02T00:00:00Z",
        "busy-reasons?at=2026-12-01T10:00:00Z",
        "status",
        "link",
    ):
        response = requests.get(calrelay.url + f"api/v1/users/nobody/{path}", auth=crm, timeout=10)
        assert response.status_code == 404, (path, response.text)
        assert "no calrelay user 'nobody'" in response.json()["error"]["message"]
    assert requests.delete(calrelay.url + "api/v1/users/nobody/link", auth=crm, timeout=10).status_code == 404
    # A person still gets 403 for any other name, so names cannot be probed.
    assert requests.get(calrelay.url + "api/v1/users/nobody/status", auth=calrelay.auth("alice"),
                        timeout=10).status_code == 403
    assert requests.get(calrelay.url + "api/v1/users/alice/status", auth=crm, timeout=10).status_code == 200
    status = subprocess.run(
        [sys.executable, "-m", "proxy", "status", "nobody", "--data", str(calrelay.data_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert status.returncode != 0 and "no calrelay user 'nobody'" in status.stderr


# -- 3. one Apple ID, one calrelay user -------------------------------------------------------------------


def test_an_apple_id_linked_to_one_user_is_refused_for_another(calrelay):
    assert link(calrelay, "alice").status_code == 200
    refused = link(calrelay, "bob", as_user="crm")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "apple_id_in_use" and "'alice'" in error["message"]
    assert requests.get(calrelay.url + "api/v1/users/bob/status", auth=calrelay.auth("bob"),
                        timeout=10).json()["linked"] is False
    assert link(calrelay, "alice", conflicts=["home"]).status_code == 200  # re-linking the same user is fine


# -- 4. the primary named again under --conflict is said, not silently dropped ----------------------------


def test_primary_named_as_conflict_is_reported(calrelay):
    url = calrelay.app[EMULATOR].discovery_url
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "link", "alice", "--data", str(calrelay.data_dir), "--server", url,
         "--apple-id", APPLE_ID, "--app-password-stdin", "--primary", "work", "--conflict", "work"],
        input=APP_PASSWORD + "\n", capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "'work' is the primary calendar, which already blocks availability" in done.stderr
    response = link(calrelay, "alice", conflicts=["Work"])
    assert response.status_code == 200 and "already blocks availability" in response.json()["notes"][0]
    contradiction = link(calrelay, "alice", conflicts=["work"], primary_blocks=False)
    assert contradiction.status_code == 400
    assert contradiction.json()["error"]["code"] == "contradictory_conflicts"


# -- 5. recordings started through the API stay in the recordings folder ----------------------------------


def test_recording_api_writes_only_into_the_recordings_folder(calrelay, tmp_path):
    url = calrelay.url + "api/v1/recording"
    crm = calrelay.auth("crm")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for path in (str(victim), "../victim.txt", str(tmp_path / "new.har"), ""):
        refused = requests.post(url, json={"action": "start", "path": path}, auth=crm, timeout=10)
        assert refused.status_code == 400, (path, refused.text)
        assert "recordings" in refused.json()["error"]["message"]
    assert victim.read_text() == "precious" and not (tmp_path / "new.har").exists()
    started = requests.post(url, json={"action": "start", "path": "session.har"}, auth=crm, timeout=10)
    assert started.status_code == 200, started.text
    folder = calrelay.data_dir / "recordings"
    assert started.json()["path"] == str((folder / "session.har").resolve())
    assert requests.post(url, json={"action": "stop"}, auth=crm, timeout=10).status_code == 200
    assert (folder / "session.har").stat().st_mode & 0o077 == 0
    assert folder.stat().st_mode & 0o077 == 0


# -- 6. everything calrelay creates is private to its user ------------------------------------------------


def test_everything_calrelay_creates_is_private(tmp_path):
    data = tmp_path / "data"
    for name, service in (("alice", False), ("crm", True)):
        flags = ["--service"] if service else []
        assert calrelay("users", "add", name, *flags, "--password-stdin", "--data", str(data),
                        stdin=f"{name}-pw\n").returncode == 0
    with serving(data) as (url, _):
        principal = caldav.DAVClient(url=url, username="alice", password="alice-pw").principal()
        calendar = principal.make_calendar(name="Work", cal_id="work")
        calendar.save_event(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:private-1\r\n"
            "DTSTAMP:20261201T000000Z\r\nDTSTART:20261202T100000Z\r\nDTEND:20261202T110000Z\r\n"
            "SUMMARY:Secret\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
        linked = requests.put(url + "api/v1/users/alice/link", auth=("alice", "alice-pw"), timeout=30,
                              json={"apple_id": APPLE_ID, "app_password": APP_PASSWORD, "primary": "work"})
        assert linked.status_code == 200, linked.text
        assert requests.post(url + "api/v1/recording", json={"action": "start", "path": "s.har"},
                             auth=("crm", "crm-pw"), timeout=10).status_code == 200
        requests.request("PROPFIND", url + "alice/", auth=("alice", "alice-pw"), timeout=10)
        found = {path.name for path in data.rglob("*")}
        assert {"secret.key", "users", "s.har"} <= found, found
        if database.is_sqlite(os.environ.get(database.TEST_DATABASE_ENV) or "sqlite://"):
            # While the server runs, SQLite's -wal and -shm files exist next to the database.
            assert {"calrelay.db-wal", "calrelay.db-shm"} <= found, found
        readable = [
            f"{path.relative_to(data)} {stat.filemode(path.stat().st_mode)}"
            for path in [data, *data.rglob("*")]
            if not path.is_symlink() and path.stat().st_mode & 0o077
        ]
        assert readable == []
    assert os.stat(data).st_mode & 0o777 == 0o700


# -- 8. a port in use is one line naming what to change -------------------------------------------------


def test_a_port_in_use_says_which_flag_to_change(tmp_path):
    data = str(tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        server = calrelay("serve", "--data", data, "--port", port, "--emulator-port", "0",
                          "--emulator-partition-port", "0")
        assert server.returncode == 2, server.stderr
        assert "--port or [server] port" in server.stderr and "Traceback" not in server.stderr
        emulator = calrelay("serve", "--data", data, "--port", "0", "--emulator-port", port,
                            "--emulator-partition-port", "0")
        assert emulator.returncode == 2, emulator.stderr
        assert "--emulator-port" in emulator.stderr and "Traceback" not in emulator.stderr


# -- 9. link --list shows whole calendar ids --------------------------------------------------------------


def test_link_list_prints_whole_calendar_ids(calrelay):
    url = calrelay.app[EMULATOR].discovery_url
    listing = subprocess.run(
        [sys.executable, "-m", "proxy", "link", "alice", "--list", "--data", str(calrelay.data_dir), "--server", url,
         "--apple-id", APPLE_ID, "--app-password-stdin"],
        input=APP_PASSWORD + "\n", capture_output=True, text=True, timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    (account,) = calrelay.app[EMULATOR].accounts
    names = [calendar.id for calendar in account.calendars]
    assert any(len(name) > 24 for name in names)
    printed = {line.split()[0] for line in listing.stdout.splitlines()[1:]}
    assert set(names) <= printed | {"inbox", "outbox", "notification"}, listing.stdout


# -- 17. the availability API gives a calendar's effective kind ------------------------------------------


def test_availability_reports_the_effective_kind_of_a_calendar_without_one(calrelay):
    crm = calrelay.auth("crm")
    assert mkcalendar(calrelay.url + "alice/plain/", crm, "Plain").status_code == 201
    assert mkcalendar(calrelay.url + "alice/sales/", crm, "Sales", kind="round-robin").status_code == 201
    answer = requests.get(calrelay.url + "api/v1/users/alice/availability",
                          params={"start": "2026-12-01T00:00:00Z", "end": "2026-12-02T00:00:00Z"}, auth=crm,
                          timeout=10)
    assert answer.status_code == 200, answer.text
    kinds = {source["calendar"]: source["calendar_kind"] for source in answer.json()["sources"]}
    assert kinds == {"/alice/plain/": "simple", "/alice/sales/": "round-robin"}


# -- 18. installing prints no setuptools deprecation warning ---------------------------------------------


def test_building_the_package_prints_no_deprecation_warning(tmp_path):
    root = Path(__file__).resolve().parents[2]
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(root)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    output = built.stdout + built.stderr
    assert "deprecated" not in output.lower() and "project.license" not in output, output


# -- 16. help texts, log levels and a missing terminal ----------------------------------------------------


def test_help_is_plain_text_and_log_levels_follow_the_flags(tmp_path):
    for command in (("serve",), ("users",), ("config",), ("replay",), ("users", "add")):
        shown = calrelay(*command, "--help")
        assert shown.returncode == 0 and "``" not in shown.stdout, shown.stdout
    data = str(tmp_path / "data")
    with socket.socket() as taken:  # serve logs its start, then stops at once on the port in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        serve = ("serve", "--data", data, "--port", str(taken.getsockname()[1]), "--emulator-port", "0",
                 "--emulator-partition-port", "0")
        default, quiet, verbose = calrelay(*serve), calrelay(*serve, "-q"), calrelay(*serve, "-v")
    assert " INFO " in default.stderr and " DEBUG " not in default.stderr, default.stderr
    assert " INFO " not in quiet.stderr and "already in use" in quiet.stderr, quiet.stderr
    assert " DEBUG " in verbose.stderr, verbose.stderr


def test_no_terminal_and_no_password_stdin_is_a_message_not_a_traceback(tmp_path):
    added = calrelay("users", "add", "alice", "--data", str(tmp_path / "data"))
    assert added.returncode == 2 and "--password-stdin" in added.stderr and "Traceback" not in added.stderr
    listed = calrelay("link", "alice", "--list", "--apple-id", APPLE_ID, "--data", str(tmp_path / "data"))
    assert listed.returncode == 1 and "--app-password-stdin" in listed.stderr, listed.stderr
    assert "Traceback" not in listed.stderr


# -- 15. config --check reports every problem -------------------------------------------------------------


def test_config_check_reports_every_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nprot = 1\nthreads = 0\n[storage]\ndefault_calendar_kind = "odd"\n'
                    '[availability]\ntimezone = "Mars/Olympus"\n[upstream]\ntimeout = "soon"\n[colour]\n')
    checked = calrelay("config", "--check", "--config", str(path))
    assert checked.returncode == 2
    for problem in ("unknown section [colour]", "unknown key server.prot", "upstream.timeout must be a number",
                    "server.threads must be at least 1", "storage.default_calendar_kind",
                    "unknown time zone 'Mars/Olympus'"):
        assert problem in checked.stderr, checked.stderr
    assert len(checked.stderr.strip().splitlines()) == 6


# -- 12. replay with a wrong password stops at the first 401 ----------------------------------------------


def test_replay_with_a_wrong_password_stops_at_once_with_authentication_failed(calrelay):
    recording = Path(__file__).resolve().parents[1] / "recordings" / "crm-session.har"
    replayed = calrelay_cli_replay(recording, calrelay.url, "not-the-password")
    assert replayed.returncode == 2, replayed.stdout + replayed.stderr
    assert "authentication failed" in replayed.stderr and "differ" not in replayed.stdout
    right = calrelay_cli_replay(recording, calrelay.url, calrelay.password("crm"))
    assert right.returncode == 0, right.stdout  # the example, as the service account, on an empty server


def calrelay_cli_replay(recording: Path, url: str, password: str) -> subprocess.CompletedProcess:
    return calrelay("replay", str(recording), "--target", url, "--user", "crm", "--password-stdin",
                    stdin=password + "\n")


# -- 14. the docs stand alone ----------------------------------------------------------------------------


def test_docs_link_only_to_files_in_the_repository():
    root = Path(__file__).resolve().parents[2]
    pages = [root / "README.md", root / "GOALS.md", *sorted((root / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        broken += [f"{page.name}: {line.strip()}" for line in text.splitlines()
                   if "shared/design.md" in line or "shared/icloud.md" in line]
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.name}: link to {target}")
    assert broken == []
    contract = (root / "docs" / "crm-contract.md").read_text()
    assert "11. Changes made in the CRM" in contract and "{urn:calrelay}calendar-kind" in contract
    assert "## Emulator checklist" in (root / "docs" / "icloud.md").read_text()
