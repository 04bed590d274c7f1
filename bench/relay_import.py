"""Benchmark of a large first import: does it stall anything?

Runs calrelay in-process with its built-in iCloud emulator (as bench/relay.py). ``--events`` iCloud-born
events are put into the emulator's demo account, then user ``crm`` links it, and while the import runs:

- import rate: events imported per second, from the link to "last pull" being set;
- push delay: a CRM appointment written one second into the import, until it exists in iCloud (target ≤ 1 s);
- PROPFIND p95 (Depth 1) of the importing user's mirror and of another user's calendar (target ≤ 100 ms);
- idle CPU: with ``--idle-users`` users linked and nothing changing, the process's CPU time over
  ``--idle-seconds``.

    python bench/relay_import.py [--events 3000] [--idle-users 10] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.relay import CRM, START, Server, appointment, percentile
from proxy.auth import UserRecord
from proxy.keys import AUTHENTICATOR, EMULATOR, ENGINE, RELAY, STATE

LINK = {"apple_id": "demo@icloud.test", "app_password": "abcd-efgh-ijkl-mnop", "primary": "work"}
PROPFIND = b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>'


def seed(server: Server, count: int) -> None:
    emulator = server.app[EMULATOR].emulator
    (state,) = emulator.store.accounts.values()

    async def put_all() -> None:
        for n in range(count):
            uid = f"bulk-{n}"
            emulator.store.put_object(state, state.collections["work"], f"{uid}.ics",
                                      appointment(uid, START + timedelta(hours=n)).decode(), uid, "VEVENT")

    server.run(put_all())


def mkcalendar(session: requests.Session, url: str, kind: str) -> None:
    session.request("MKCALENDAR", url, timeout=30).raise_for_status()
    session.request(
        "PROPPATCH", url, timeout=30,
        data=b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:CR="urn:calrelay"><D:set>'
        b"<D:prop><CR:calendar-kind>" + kind.encode() + b"</CR:calendar-kind></D:prop></D:set></D:propertyupdate>",
    ).raise_for_status()


def last_pull(server: Server, user: str) -> float | None:
    state = server.app[STATE]
    calendars = server.run(state.call(state.db.link_calendars, user))
    return calendars[0].last_success_at if calendars else None


def measure(events: int, idle_users: int, idle_seconds: float) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as directory:
        server = Server(Path(directory) / "data", 8)
        try:
            session = requests.Session()
            session.auth = CRM
            mkcalendar(session, server.url + "crm/sales/", "round-robin")
            users = server.app[AUTHENTICATOR].users  # in the database
            records = users.records()
            for user in ["other", *(f"idle{n}" for n in range(1, idle_users))]:
                records[user] = UserRecord(user, records["crm"].password_hash, False)
                server.app[ENGINE].ensure_principal(user)
            users.write(records)
            mkcalendar(session, server.url + "other/cal/", "round-robin")
            for n in range(50):
                session.put(server.url + f"other/cal/o{n}.ics", data=appointment(f"o{n}", START),
                            headers={"Content-Type": "text/calendar"}, timeout=30).raise_for_status()
            seed(server, events)

            latencies: dict[str, list[float]] = {"importing user": [], "other user": []}
            stop = threading.Event()

            def browse(name: str, url: str) -> None:
                with requests.Session() as browser:
                    browser.auth = CRM
                    while not stop.is_set():
                        sent = time.perf_counter()
                        browser.request("PROPFIND", url, data=PROPFIND, headers={"Depth": "1"}, timeout=120)
                        latencies[name].append(time.perf_counter() - sent)
                        time.sleep(0.05)

            linked = time.perf_counter()
            session.put(server.url + "api/v1/users/crm/link", timeout=30, json=LINK).raise_for_status()
            browsers = [threading.Thread(target=browse, args=("importing user", server.url + "crm/icloud-work/")),
                        threading.Thread(target=browse, args=("other user", server.url + "other/cal/"))]
            for thread in browsers:
                thread.start()
            time.sleep(1.0)
            session.put(server.url + "crm/sales/during.ics", data=appointment("during", START - timedelta(days=1)),
                        headers={"Content-Type": "text/calendar"}, timeout=60).raise_for_status()
            written = time.perf_counter()
            pushed = None
            while last_pull(server, "crm") is None:
                if pushed is None and "during" in server.in_icloud():
                    pushed = time.perf_counter() - written
                time.sleep(0.005)
            imported = time.perf_counter() - linked
            while pushed is None:
                if "during" in server.in_icloud():
                    pushed = time.perf_counter() - written
                time.sleep(0.005)
            stop.set()
            for thread in browsers:
                thread.join()
            worker = server.app[RELAY].worker("crm")
            figures["import events/s"] = worker.stats["imported"] / imported
            figures["import seconds"] = imported
            figures["push delay during import s"] = pushed
            for name, values in latencies.items():
                if values:
                    figures[f"PROPFIND p95 {name} ms"] = percentile(values, 0.95) * 1000
                    figures[f"PROPFIND requests {name}"] = len(values)

            # Idle: more users linked to the same account, everything synced, nothing changing.
            for n in range(1, idle_users):
                session.put(server.url + f"api/v1/users/idle{n}/link", timeout=60, json=LINK).raise_for_status()
            deadline = time.monotonic() + 600
            while any(last_pull(server, f"idle{n}") is None for n in range(1, idle_users)):
                if time.monotonic() > deadline:
                    raise SystemExit("idle users never finished their first sync")
                time.sleep(0.2)
            cpu, wall = time.process_time(), time.perf_counter()
            time.sleep(idle_seconds)
            figures["idle CPU % (one core)"] = (time.process_time() - cpu) / (time.perf_counter() - wall) * 100
        finally:
            server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--idle-users", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("radicale").setLevel(logging.ERROR)
    for name, value in measure(args.events, args.idle_users, args.idle_seconds).items():
        print(f"{name:<40} {value:10.2f}")


if __name__ == "__main__":
    main()
