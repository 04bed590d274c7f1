"""Benchmark of large first imports: how fast, and do they stall anything?

Runs calrelay in-process with its built-in iCloud emulator (as bench/relay.py). ``--events`` iCloud-born
events are put into an emulator account, then user ``crm`` links it, and while the import runs:

- import rate: events imported per second, from the link to "last pull" being set;
- push delay: a CRM appointment written one second into the import, until it exists in iCloud (target ≤ 1 s);
- PROPFIND p95 (Depth 1) of the importing user's home (which lists its calendars) and of another user's
  50-event calendar (target ≤ 100 ms), and of the same requests once the import is over (what the import adds);
- concurrent imports: ``--importers`` users, each with its own account of ``--events`` events, linked at
  once: the slowest one's rate and all of them together, against the single import's; meanwhile a Depth 1
  PROPFIND of the first user's whole mirror (``--events`` events, which Radicale answers item by item): the
  latency the imports add to it, against the same request with no import running;
- idle CPU: with ``--idle-users`` users linked (each its own Apple ID) and nothing changing, the process's
  CPU time over ``--idle-seconds``.

The storage is SQLite in a temporary data directory unless ``--database`` names another database (a
PostgreSQL URL, e.g. from ``.ci/postgres.sh start DIR``; the bench does not empty it, so use a fresh one).
The emulator runs in the same process and competes for the same interpreter: its share of the CPU is part
of the figures (profile with ``py-spy record --pid``).

    python bench/relay_import.py [--events 3000] [--importers 3] [--idle-users 10] [--idle-seconds 60]
                                 [--database URL]
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

PASSWORD = "abcd-efgh-ijkl-mnop"
PROPFIND = b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>'
#: What a client asks of a home to list its calendars.
PROPFIND_HOME = (b'<?xml version="1.0"?><propfind xmlns="DAV:" xmlns:CS="http://calendarserver.org/ns/"><prop>'
                 b"<resourcetype/><displayname/><getetag/><CS:getctag/></prop></propfind>")


def link_body(apple_id: str) -> dict[str, str]:
    return {"apple_id": apple_id, "app_password": PASSWORD, "primary": "work"}


def accounts_toml(apple_ids: list[str]) -> str:
    """One account per Apple ID, each with a "work" calendar (one Apple ID serves one calrelay user)."""
    return "".join(
        f'[[account]]\napple_id = "{apple_id}"\ndsid = "{1000000000 + n}"\napp_passwords = ["{PASSWORD}"]\n'
        f'full_name = "Bench {n}"\n\n  [[account.calendar]]\n  id = "work"\n  displayname = "Work"\n\n'
        for n, apple_id in enumerate(apple_ids)
    )


def seed(server: Server, apple_id: str, count: int) -> None:
    emulator = server.app[EMULATOR].emulator
    state = emulator.store.by_apple_id(apple_id)
    assert state is not None

    async def put_all() -> None:
        for n in range(count):
            uid = f"bulk-{apple_id}-{n}"
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


def imported(server: Server, user: str) -> int:
    worker = server.app[RELAY].worker(user)
    return worker.stats["imported"] if worker is not None else 0


def wait_synced(server: Server, users: list[str], limit: float = 1800) -> dict[str, float]:
    """Seconds from now until each user's first pull has finished."""
    started, done = time.perf_counter(), {}
    while len(done) < len(users):
        if time.perf_counter() - started > limit:
            raise SystemExit(f"first sync of {sorted(set(users) - set(done))} not done in {limit} s")
        for user in users:
            if user not in done and last_pull(server, user) is not None:
                done[user] = time.perf_counter() - started
        time.sleep(0.05)
    return done


class Browsing:
    """Clients sending Depth 1 PROPFINDs one after another (50 ms apart) until stopped; one thread per case."""

    def __init__(self, cases: dict[str, tuple[str, bytes]]) -> None:
        self.latencies: dict[str, list[float]] = {name: [] for name in cases}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._browse, args=(name, url, body))
                         for name, (url, body) in cases.items()]
        for thread in self._threads:
            thread.start()

    def _browse(self, name: str, url: str, body: bytes) -> None:
        with requests.Session() as browser:
            browser.auth = CRM
            while not self._stop.is_set():
                sent = time.perf_counter()
                try:
                    browser.request("PROPFIND", url, data=body, headers={"Depth": "1"}, timeout=120
                                    ).raise_for_status()
                except requests.RequestException as error:  # counted at what it cost, and browsing goes on
                    logging.warning("PROPFIND %s failed after %.0f s: %s", url, time.perf_counter() - sent, error)
                self.latencies[name].append(time.perf_counter() - sent)
                time.sleep(0.05)

    def stop(self) -> dict[str, list[float]]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.latencies


def report_latency(figures: dict[str, float], name: str, during: list[float], idle: list[float]) -> None:
    """p95 while importing (target ≤ 100 ms) and with no import: the latency the import adds."""
    if during:
        figures[f"PROPFIND p95 {name}, importing, ms"] = percentile(during, 0.95) * 1000
        figures[f"PROPFIND requests {name}, importing"] = len(during)
    if idle:
        figures[f"PROPFIND p95 {name}, no import, ms"] = percentile(idle, 0.95) * 1000
    if during and idle:
        figures[f"PROPFIND p95 {name}, added by the import, ms"] = (
            percentile(during, 0.95) - percentile(idle, 0.95)) * 1000


def measure(events: int, importers: int, idle_users: int, idle_seconds: float,
            database: str | None) -> dict[str, float]:
    figures: dict[str, float] = {}
    importing = [f"imp{n}" for n in range(importers)]
    idle = [f"idle{n}" for n in range(idle_users)]
    with tempfile.TemporaryDirectory() as directory:
        accounts = Path(directory) / "accounts.toml"
        accounts.write_text(accounts_toml([f"{user}@icloud.test" for user in ["crm", *importing, *idle]]))
        server = Server(Path(directory) / "data", 8, database=database, accounts_file=accounts)
        try:
            session = requests.Session()
            session.auth = CRM
            mkcalendar(session, server.url + "crm/sales/", "round-robin")
            users = server.app[AUTHENTICATOR].users  # in the database
            records = users.records()
            for user in ["other", *importing, *idle]:
                records[user] = UserRecord(user, records["crm"].password_hash, False)
                server.app[ENGINE].ensure_principal(user)
            users.write(records)
            mkcalendar(session, server.url + "other/cal/", "round-robin")
            for n in range(50):
                session.put(server.url + f"other/cal/o{n}.ics", data=appointment(f"o{n}", START),
                            headers={"Content-Type": "text/calendar"}, timeout=30).raise_for_status()
            for user in ["crm", *importing]:
                seed(server, f"{user}@icloud.test", events)

            # The cases: a client listing the importing user's calendars, another user's calendar.
            cases = {"importing user's home": (server.url + "crm/", PROPFIND_HOME),
                     "other user's calendar": (server.url + "other/cal/", PROPFIND)}
            browsing = Browsing(cases)
            linked, cpu = time.perf_counter(), time.process_time()
            session.put(server.url + "api/v1/users/crm/link", timeout=30, json=link_body("crm@icloud.test")
                        ).raise_for_status()
            time.sleep(1.0)
            session.put(server.url + "crm/sales/during.ics", data=appointment("during", START - timedelta(days=1)),
                        headers={"Content-Type": "text/calendar"}, timeout=60).raise_for_status()
            written = time.perf_counter()
            pushed = None
            while last_pull(server, "crm") is None:
                if pushed is None and "during" in server.in_icloud("crm@icloud.test"):
                    pushed = time.perf_counter() - written
                time.sleep(0.005)
            import_seconds, import_cpu = time.perf_counter() - linked, time.process_time() - cpu
            during = browsing.stop()
            while pushed is None:
                if "during" in server.in_icloud("crm@icloud.test"):
                    pushed = time.perf_counter() - written
                time.sleep(0.005)
            figures["import events"] = imported(server, "crm")
            figures["import events/s"] = imported(server, "crm") / import_seconds
            figures["import seconds"] = import_seconds
            # The whole process (relay, emulator, the browsing answered meanwhile): less at the mercy of a
            # shared machine's load than the wall-clock rate.
            figures["import CPU ms per event"] = import_cpu / max(1, imported(server, "crm")) * 1000
            figures["push delay during import s"] = pushed
            # The same requests with no import running: what the import adds to them.
            browsing = Browsing(cases)
            time.sleep(max(3.0, import_seconds / 10))
            idle_latencies = browsing.stop()
            for name in cases:
                report_latency(figures, name, during[name], idle_latencies[name])

            if importing:  # several users' imports at once
                # Meanwhile the first user's whole mirror is listed: what imports add to a request that costs
                # Radicale a parse per item.
                mirror = {f"{events}-event mirror": (server.url + "crm/icloud-work/", PROPFIND)}
                browsing = Browsing(mirror)
                cpu = time.process_time()
                for user in importing:
                    session.put(server.url + f"api/v1/users/{user}/link", timeout=60,
                                json=link_body(f"{user}@icloud.test")).raise_for_status()
                done = wait_synced(server, importing)
                during = browsing.stop()
                total = sum(imported(server, user) for user in importing)
                figures[f"concurrent imports ({importers}) events"] = total
                figures["concurrent imports slowest events/s"] = min(
                    imported(server, user) / done[user] for user in importing)
                figures["concurrent imports together events/s"] = total / max(done.values())
                figures["concurrent imports CPU ms per event"] = (time.process_time() - cpu) / max(1, total) * 1000
                browsing = Browsing(mirror)
                time.sleep(max(5.0, max(done.values()) / 5))
                idle_latencies = browsing.stop()
                for name in mirror:
                    report_latency(figures, name, during[name], idle_latencies[name])

            # Idle: more users linked, each to its own account, everything synced, nothing changing.
            for user in idle:
                session.put(server.url + f"api/v1/users/{user}/link", timeout=60,
                            json=link_body(f"{user}@icloud.test")).raise_for_status()
            wait_synced(server, idle)
            cpu, wall = time.process_time(), time.perf_counter()
            time.sleep(idle_seconds)
            figures[f"idle CPU % (one core), {idle_users + importers + 1} links"] = (
                (time.process_time() - cpu) / (time.perf_counter() - wall) * 100)
        finally:
            server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--importers", type=int, default=3, help="users importing at once (0: skip)")
    parser.add_argument("--idle-users", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--database", help="SQLAlchemy URL (default: SQLite in a temporary data directory)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("radicale").setLevel(logging.ERROR)
    print(f"storage: {(args.database or 'sqlite').split(':', 1)[0]}")
    for name, value in measure(args.events, args.importers, args.idle_users, args.idle_seconds,
                               args.database).items():
        print(f"{name:<60} {value:10.2f}")


if __name__ == "__main__":
    main()
