"""``calrelay emulator`` as its own process, the one upstream of calrelay instances: it takes its ports from the
instances' configuration (``[emulator]``), a ``calrelay serve`` (another process) whose ``[upstream]
default_server`` points at it links a user to it, and an appointment written to calrelay lands in it and in
its data directory."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from tests.frontdoor.test_new_user import APP_PASSWORD, APPLE_ID, serving
from tests.helpers import event, free_port, mkcalendar, put

#: Inside the relay's sync window whenever the test runs.
START = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)


def calrelay_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


def work_objects(discovery: str) -> int:
    (account,) = requests.get(discovery + "_emulator/accounts", timeout=5).json()
    return next(c["objects"] for c in account["collections"] if c["id"] == "work")


def test_calrelay_serve_links_a_user_to_the_standalone_emulator(tmp_path: Path) -> None:
    port, partition_port = free_port(), free_port()
    config = tmp_path / "calrelay.toml"
    config.write_text(
        f'[storage]\ndatabase = "sqlite:///{tmp_path / "shared.db"}"\n'
        f'[upstream]\ndefault_server = "http://127.0.0.1:{port}/"\npoll_interval = 1.0\n'
        f"[emulator]\nport = {port}\npartition_port = {partition_port}\n"
    )
    emulator_data = tmp_path / "emulator"
    emulator = subprocess.Popen(
        [sys.executable, "-m", "proxy", "emulator", "--config", str(config), "--data", str(emulator_data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert emulator.stdout is not None
        banner = emulator.stdout.readline()
        discovery = f"http://127.0.0.1:{port}/"
        assert f"discovery {discovery}" in banner and f":{partition_port}" in banner, banner
        assert work_objects(discovery) == 0

        data = tmp_path / "one"
        for name, flags in (("alice", []), ("crm", ["--service"])):
            added = calrelay_cli("users", "add", name, *flags, "--password-stdin", "--config", str(config),
                                 "--data", str(data), stdin=f"{name}-pw\n")
            assert added.returncode == 0, added.stderr
        # --emulator-port 0 (serving() passes it) would matter only if calrelay ran its own emulator: it does not.
        with serving(data, "--config", str(config)) as (url, _):
            crm = ("crm", "crm-pw")
            assert mkcalendar(url + "alice/sales/", crm, "Sales", kind="round-robin").status_code == 201
            linked = requests.put(url + "api/v1/users/alice/link", auth=crm, timeout=30,
                                  json={"apple_id": APPLE_ID, "app_password": APP_PASSWORD, "primary": "work"})
            assert linked.status_code == 200, linked.text
            status = requests.get(url + "api/v1/users/alice/status", auth=crm, timeout=10).json()
            assert status["server"] == discovery
            assert put(url + "alice/sales/call-1.ics", crm, event("call-1", START)).status_code == 201
            deadline = time.monotonic() + 30
            pushed = time.monotonic()
            while work_objects(discovery) < 1:
                assert time.monotonic() < deadline, "the appointment did not reach the emulator"
                time.sleep(0.1)
            assert work_objects(discovery) == 1
            print(f"\npushed to the standalone emulator in {time.monotonic() - pushed:.2f} s")
        emulator.send_signal(signal.SIGTERM)
        assert emulator.wait(10) == 0
        # Its own data directory keeps what calrelay relayed, for the next start.
        assert "call-1" in json.dumps(json.loads((emulator_data / "emulator-state.json").read_text()))
    finally:
        if emulator.poll() is None:
            emulator.kill()
