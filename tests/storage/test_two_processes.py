"""Two calrelay processes on one database: If-Match races have exactly one winner per round and no
acknowledged write is lost. On PostgreSQL (``CALRELAY_TEST_DATABASE``) as several instances would run; on
SQLite as two processes on one machine share its file (the server beside a CLI command, or a second server)."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests

from tests.conftest import write_users
from tests.helpers import event, free_port, mkcalendar, put

AUTH = ("alice", "alice-secret")
START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture
def two_servers(tmp_path):
    data = tmp_path / "data"
    write_users(data / "users", {"alice": ("alice-secret", False)})
    config = tmp_path / "calrelay.toml"
    config.write_text(f'[storage]\ndata_dir = "{data}"\n[emulator]\nport = 0\npartition_port = 0\n'
                      "[auth]\nfailed_login_delay = 0.0\n")
    processes, urls = [], []
    try:
        for _ in range(2):
            port = free_port()
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            urls.append(f"http://127.0.0.1:{port}/")
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(urls[-1] + "health", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    pass
                assert processes[-1].poll() is None, processes[-1].stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "calrelay serve did not start"
                time.sleep(0.1)
        yield urls
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


def test_if_match_races_across_two_processes_have_one_winner(two_servers) -> None:
    first, second = two_servers
    assert mkcalendar(first + "alice/sales/", AUTH, "Sales").status_code == 201
    created = put(first + "alice/sales/race.ics", AUTH, event("race", START, summary="v0"))
    assert created.status_code == 201
    etag = created.headers["ETag"]
    for round_ in range(10):
        def attempt(n: int, round_: int = round_, etag: str = etag) -> tuple[int, str, str]:
            base = (first, second)[n % 2]
            body = event("race", START, summary=f"r{round_}-c{n}")
            response = put(base + "alice/sales/race.ics", AUTH, body, **{"If-Match": etag})
            return response.status_code, f"r{round_}-c{n}", response.headers.get("ETag", "") or response.text[:300]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(attempt, range(8)))
        winners = [result for result in results if result[0] in (200, 201, 204)]
        assert len(winners) == 1, results
        assert sorted(status for status, _, _ in results) == sorted([winners[0][0]] + [412] * 7), results
        stored = requests.get(second + "alice/sales/race.ics", auth=AUTH, timeout=10)
        assert f"SUMMARY:{winners[0][1]}" in stored.text
        etag = stored.headers["ETag"]
        assert etag == winners[0][2]


def test_creates_with_if_none_match_across_two_processes_keep_every_acknowledged_write(two_servers) -> None:
    first, second = two_servers
    assert mkcalendar(first + "alice/sales/", AUTH, "Sales").status_code == 201

    def create(n: int) -> tuple[int, int]:
        base = (first, second)[n % 2]
        uid = f"ev-{n % 40}"  # every UID twice: one create wins, the other is refused
        response = put(base + f"alice/sales/{uid}.ics", AUTH, event(uid, START, summary=f"c{n}"),
                       **{"If-None-Match": "*"})
        return n, response.status_code

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(80)))
    acknowledged = {n for n, status in results if status == 201}
    assert len(acknowledged) == 40, results
    assert {status for _, status in results} == {201, 412}
    for n in acknowledged:
        stored = requests.get(second + f"alice/sales/ev-{n % 40}.ics", auth=AUTH, timeout=10)
        assert f"SUMMARY:c{n}" in stored.text
