"""Benchmark of calrelay under hostile requests: a real ``calrelay serve`` with two stored runaway rules.

Seeds alice's calendar with a SECONDLY and a MINUTELY rule without end (stored through the storage without
calrelay's checks, as objects stored before the write-time checks would be), then sends a stream of the
worst requests (availability for a year, busy-reasons, free-busy REPORT, calendar-query with and without
expand, a 100,000-deep PROPFIND, runaway PUTs) from four threads while bob keeps working. Prints each
hostile request's latency, bob's p50/max latency with and without the stream, the server's peak RSS, and
how long SIGTERM takes to stop it.

    python bench/hostile.py [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.auth import UserRecord, UsersFile
from tests.helpers import free_port, mkcalendar, put
from tests.hostile.test_runaway import FREEBUSY, YEAR, calendar_query, runaway, store_behind_calrelays_back

ALICE, BOB = ("alice", "alice-secret"), ("bob", "bob-secret")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="calrelay-hostile-"))
    data, port = root / "data", free_port()
    config = root / "calrelay.toml"
    config.write_text(f'[storage]\ndata_dir = "{data}"\n[auth]\nfailed_login_delay = 0.0\n'
                      "[emulator]\nport = 0\npartition_port = 0\n")
    UsersFile(data / "users").write({
        name: UserRecord(name, bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)), False)
        for name, password in (ALICE, BOB)
    })
    process = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(300):
        try:
            if requests.get(url + "health", timeout=1).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    try:
        for user, auth in (("alice", ALICE), ("bob", BOB)):
            mkcalendar(f"{url}{user}/sales/", auth, "Sales", kind="round-robin")
        put(f"{url}bob/sales/b.ics", BOB, runaway("b", "WEEKLY"))
        for uid, freq in (("s", "SECONDLY"), ("m", "MINUTELY")):
            store_behind_calrelays_back(data, "/alice/sales/", f"{uid}.ics", runaway(uid, freq))
        xml = {"Content-Type": "application/xml", "Depth": "1"}
        deep = b'<D:propfind xmlns:D="DAV:">' + b"<D:x>" * 100_000 + b"</D:x>" * 100_000 + b"</D:propfind>"
        hostile = {
            "availability, a year": ("GET", f"{url}api/v1/users/alice/availability?{YEAR}", {}),
            "busy-reasons": ("GET", f"{url}api/v1/users/alice/busy-reasons?at=2027-03-01T10:00:00Z", {}),
            "free-busy REPORT, a year": ("REPORT", f"{url}alice/sales/", {"data": FREEBUSY, "headers": xml}),
            "calendar-query + expand": ("REPORT", f"{url}alice/sales/", {"data": calendar_query(True), "headers": xml}),
            "calendar-query": ("REPORT", f"{url}alice/sales/", {"data": calendar_query(False), "headers": xml}),
            "PROPFIND 100,000 deep": ("PROPFIND", f"{url}alice/", {"data": deep, "headers": xml}),
            "PUT FREQ=SECONDLY": ("PUT", f"{url}alice/sales/x.ics", {
                "data": runaway("x", "SECONDLY"), "headers": {"Content-Type": "text/calendar"}}),
        }

        def send(method: str, target: str, auth, **kwargs) -> tuple[int, float]:
            started = time.monotonic()
            status = requests.request(method, target, auth=auth, timeout=60, **kwargs).status_code
            return status, time.monotonic() - started

        def bob_latencies(count: int) -> list[float]:
            return [send("PROPFIND", f"{url}bob/sales/", BOB, headers={"Depth": "1"})[1] for _ in range(count)]

        print(f"RSS after start: {rss_mb(process.pid):.0f} MB")
        print("hostile request                 status  first (ms)")
        for name, (method, target, kwargs) in hostile.items():
            status, elapsed = send(method, target, ALICE, **kwargs)
            print(f"  {name:<30} {status:>4}  {elapsed * 1000:8.1f}")
        quiet = bob_latencies(50)
        peak = 0.0
        with ThreadPoolExecutor(4) as pool:
            cases = list(hostile.values())
            futures = [pool.submit(send, cases[n % len(cases)][0], cases[n % len(cases)][1], ALICE,
                                   **cases[n % len(cases)][2]) for n in range(args.requests)]
            busy = []
            while not all(f.done() for f in futures):
                busy.extend(bob_latencies(5))
                peak = max(peak, rss_mb(process.pid))
            statuses = [f.result()[0] for f in futures]
        print(f"{args.requests} hostile requests from 4 threads: 5xx answers {sum(s >= 500 for s in statuses)}, "
              f"peak RSS {peak:.0f} MB")
        for label, latencies in (("alone", quiet), ("under attack", busy)):
            print(f"bob PROPFIND {label:<13} p50 {statistics.median(latencies) * 1000:6.1f} ms, "
                  f"max {max(latencies) * 1000:6.1f} ms ({len(latencies)} requests)")
        with ThreadPoolExecutor(2) as pool:
            for method, target, kwargs in list(hostile.values())[:4]:
                pool.submit(send, method, target, ALICE, **kwargs)
            time.sleep(0.05)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            print(f"SIGTERM during hostile requests: stopped in {time.monotonic() - started:.2f} s")
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
