"""Inputs of the capacity model in docs/scaling.md: what one linked user costs an instance and the database.

Runs calrelay in-process with its built-in emulator holding ``--users`` accounts (each with the calendars home
and work, both linked: one pushed to, one blocking). Every user is linked to its own account, then

- steady polling: with ``[upstream] poll_interval`` = ``--poll`` seconds and nothing changing, over
  ``--seconds``: pulls per second, upstream requests per pull, and the process's CPU per pull (so: pulls per
  second one core sustains);
- database: bytes of the SQLite database (pages in use × page size) per linked user (link, its
  calendars, pull state), and per relayed appointment (item status and audit rows), from ``--appointments``
  CRM appointments pushed to the first user's iCloud.

    python bench/capacity.py [--users 40] [--poll 5] [--seconds 30] [--appointments 500]
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.relay import CRM, START, Server, appointment
from proxy.keys import AUTHENTICATOR, EMULATOR, ENGINE, RELAY, SETTINGS
from proxy.operations import METRICS

PASSWORD = "abcd-efgh-ijkl-mnop"
ROUND_ROBIN = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:CR="urn:calrelay"><D:set>'
               b"<D:prop><CR:calendar-kind>round-robin</CR:calendar-kind></D:prop></D:set></D:propertyupdate>")


def accounts_file(path: Path, count: int) -> Path:
    """An emulator accounts file: ``count`` accounts, each with the calendars home and work."""
    path.write_text("".join(
        f'[[account]]\napple_id = "user{n}@icloud.test"\ndsid = "{2_000_000 + n}"\n'
        f'app_passwords = ["{PASSWORD}"]\nfull_name = "User {n}"\n'
        '[[account.calendar]]\nid = "home"\ndisplayname = "Home"\n'
        '[[account.calendar]]\nid = "work"\ndisplayname = "Work"\n'
        for n in range(count)
    ))
    return path


def counter(server: Server, name: str) -> float:
    registry = server.app[METRICS].registry
    return sum(sample.value for metric in registry.collect() for sample in metric.samples
               if sample.name == name + "_total")


def database_bytes(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        free = connection.execute("PRAGMA freelist_count").fetchone()[0]
        size = connection.execute("PRAGMA page_size").fetchone()[0]
    return (pages - free) * size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--poll", type=float, default=5.0, help="[upstream] poll_interval, seconds")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the steady-polling measurement")
    parser.add_argument("--appointments", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("radicale").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as directory:
        server = Server(Path(directory) / "data", 8, poll_interval=args.poll,
                        accounts_file=accounts_file(Path(directory) / "accounts.toml", args.users))
        try:
            database = Path(server.app[SETTINGS].database_url.removeprefix("sqlite:///"))
            session = requests.Session()
            session.auth = CRM
            empty = database_bytes(database)
            users = server.app[AUTHENTICATOR].users
            for n in range(args.users):
                users.add(f"u{n}", "pw", False)  # the database's UsersTable
                server.app[ENGINE].ensure_principal(f"u{n}")
                session.request("MKCALENDAR", server.url + f"u{n}/sales/", timeout=30).raise_for_status()
                session.request("PROPPATCH", server.url + f"u{n}/sales/", timeout=30,
                                data=ROUND_ROBIN).raise_for_status()
                session.put(server.url + f"api/v1/users/u{n}/link", timeout=60, json={
                    "apple_id": f"user{n}@icloud.test", "app_password": PASSWORD, "primary": "work",
                    "conflicts": ["home"],
                }).raise_for_status()
            relay = server.app[RELAY]
            while any(relay.worker(f"u{n}") is None or relay.worker(f"u{n}").passes == 0 for n in range(args.users)):
                time.sleep(0.1)
            time.sleep(args.poll)  # past every first pull
            linked = database_bytes(database)

            pulls = counter(server, "calrelay_relay_pulls")
            requests_made = counter(server, "calrelay_upstream_requests")
            cpu, wall = time.process_time(), time.perf_counter()
            time.sleep(args.seconds)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            pulls = counter(server, "calrelay_relay_pulls") - pulls
            requests_made = counter(server, "calrelay_upstream_requests") - requests_made

            for number in range(args.appointments):
                uid = f"cap-{number}"
                session.put(server.url + f"u0/sales/{uid}.ics", timeout=30, headers={"Content-Type": "text/calendar"},
                            data=appointment(uid, START + timedelta(hours=number))).raise_for_status()
            (account,) = [a for a in server.app[EMULATOR].emulator.store.accounts.values()
                          if a.account.apple_id == "user0@icloud.test"]
            deadline = time.monotonic() + 300
            while len(account.collections["work"].objects) < args.appointments:
                if time.monotonic() > deadline:
                    raise SystemExit("the appointments did not all reach the emulator")
                time.sleep(0.2)
            relayed = database_bytes(database)
        finally:
            server.stop()

    expected = args.users * 2 * wall / args.poll
    print(f"{args.users} users x 2 linked calendars, poll_interval {args.poll:g} s, {wall:.0f} s steady:")
    print(f"  pulls/s                      {pulls / wall:8.1f}   (model: users x calendars / poll = "
          f"{expected / wall:.1f})")
    print(f"  upstream requests per pull   {requests_made / max(pulls, 1):8.2f}")
    print(f"  CPU per pull, ms             {cpu / max(pulls, 1) * 1000:8.2f}   (process CPU {cpu / wall * 100:.0f} %"
          " of one core, emulator included)")
    print(f"  pulls/s one core sustains    {pulls / max(cpu, 1e-9):8.0f}")
    print(f"  database bytes per linked user         {(linked - empty) / args.users:8.0f}")
    print(f"  database bytes per relayed appointment {(relayed - linked) / args.appointments:8.0f}")


if __name__ == "__main__":
    main()
