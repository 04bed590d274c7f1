"""Benchmark: clients that send an expensive REPORT and hang up, against a real ``calrelay serve``.

alice has 30 events of 2,688 instances per 28 days each (accepted: under the per-event cap), so a free-busy
REPORT over a year expands about a million instances. The server runs with its default eight engine threads
and, to show the stop on its own, a per-request budget far beyond that work. Prints:

- how long the REPORT takes for a client that waits (and what it gets);
- with every engine thread busy on such a REPORT whose client then hangs up: how long until bob's PROPFIND
  is answered, bob's latency over the next requests, and the server's "stopped ..." log lines;
- how long SIGTERM takes, while eight such REPORTs are being answered, until the server stops answering
  and until its process has exited.

    python bench/disconnect.py                  # everything (the waiting REPORT takes minutes)
    python bench/disconnect.py --sigterm-only   # only the last figure
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import write_users
from tests.helpers import free_port, mkcalendar, put
from tests.hostile.test_disconnect import EVENTS, FREEBUSY, dense

ALICE, BOB = ("alice", "alice-secret"), ("bob", "bob-secret")
THREADS = 8


def start(root: Path) -> tuple[subprocess.Popen, str, Path]:
    data, port, log = root / "data", free_port(), root / "serve.log"
    config = root / "calrelay.toml"
    config.write_text(f'[server]\nthreads = {THREADS}\nshutdown_timeout = 30.0\n[storage]\ndata_dir = "{data}"\n'
                      "[limits]\nrequest_seconds = 3600.0\nrequest_instances = 1000000000\n"
                      "[auth]\nfailed_login_delay = 0.0\n[emulator]\nport = 0\npartition_port = 0\n")
    write_users(data / "users", {"alice": (ALICE[1], False), "bob": (BOB[1], False)})
    process = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}/"
    for _ in range(300):
        try:
            if requests.get(url + "health", timeout=1).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    return process, url, log


def hang_up_after(port: int, seconds: float) -> None:
    token = base64.b64encode(f"{ALICE[0]}:{ALICE[1]}".encode()).decode()
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(
            f"REPORT /alice/sales/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {token}\r\nDepth: 1\r\n"
            f"Content-Type: application/xml\r\nContent-Length: {len(FREEBUSY)}\r\n\r\n".encode() + FREEBUSY
        )
        time.sleep(seconds)


def report(url: str) -> tuple[int, float]:
    started = time.monotonic()
    response = requests.request("REPORT", url + "alice/sales/", auth=ALICE, data=FREEBUSY, timeout=3600,
                                headers={"Depth": "1", "Content-Type": "application/xml"})
    return response.status_code, time.monotonic() - started


def bob(url: str) -> float:
    started = time.monotonic()
    assert requests.request("PROPFIND", url + "bob/sales/", auth=BOB, headers={"Depth": "1"}, timeout=3600).ok
    return time.monotonic() - started


def serving(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def sigterm(process: subprocess.Popen, url: str, port: int) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        answers = [pool.submit(report, url) for _ in range(THREADS)]
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        while serving(port):
            time.sleep(0.01)
        refused = time.monotonic() - started
        process.wait(120)
        exited = time.monotonic() - started
        statuses = sorted({future.result()[0] for future in answers})
    print(f"SIGTERM with {THREADS} such REPORTs busy: no longer serving after {refused:.2f} s, process exited "
          f"after {exited:.2f} s, their answers {statuses}")


def main() -> None:
    process, url, log = start(Path(tempfile.mkdtemp(prefix="calrelay-disconnect-")))
    port = int(url.rsplit(":", 1)[1].strip("/"))
    try:
        for user, auth in (("alice", ALICE), ("bob", BOB)):
            mkcalendar(f"{url}{user}/sales/", auth, "Sales", kind="round-robin")
        for number in range(EVENTS):
            put(f"{url}alice/sales/d{number}.ics", ALICE, dense(f"d{number}"))
        if "--sigterm-only" in sys.argv:
            sigterm(process, url, port)
            return
        quiet = [bob(url) for _ in range(20)]
        print(f"bob PROPFIND, server idle: p50 {statistics.median(quiet) * 1000:.1f} ms")
        status, seconds = report(url)
        print(f"free-busy REPORT over a year of {EVENTS} dense events, client waits: {status} in {seconds:.1f} s")
        # The index keeps what it expanded: new events make the work cold again.
        for number in range(EVENTS):
            put(f"{url}alice/sales/e{number}.ics", ALICE, dense(f"e{number}"))
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda _: hang_up_after(port, 0.5), range(THREADS)))
        hung_up = time.monotonic()
        first = bob(url)
        print(f"{THREADS} clients hang up after 0.5 s, every engine thread busy: bob answered "
              f"{(time.monotonic() - hung_up) * 1000:.0f} ms after the hang-up (request {first * 1000:.0f} ms)")
        after = [bob(url) for _ in range(20)]
        print(f"bob PROPFIND right after: p50 {statistics.median(after) * 1000:.1f} ms, max {max(after) * 1000:.1f} ms")
        lines = [line.strip() for line in log.read_text().splitlines() if "stopped REPORT" in line]
        print(f"server log: {len(lines)} 'stopped' lines, e.g. {lines[0] if lines else '(none)'}")
        for number in range(EVENTS):  # cold again
            put(f"{url}alice/sales/f{number}.ics", ALICE, dense(f"f{number}"))
        sigterm(process, url, port)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
