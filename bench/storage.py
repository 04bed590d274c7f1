"""Benchmark of the SQL storage against plain Radicale 3.9 on the same data.

Fills one calendar with N events (a third weekly-recurring with an EXDATE and a moved override, in
Europe/Berlin and UTC, some all-day) on each server, then reports p50/p95 in milliseconds of:
PUT with ``If-None-Match: *`` at concurrency 8, PROPFIND Depth 1, a one-week calendar-query, the same with
``expand``, a multiget of 100, an incremental sync-collection after 10 changes, and GET. Servers:

- calrelay on SQLite (``calrelay serve`` in a subprocess, a fresh data directory);
- calrelay on PostgreSQL (``--postgres URL`` of a server; else a throwaway cluster via .ci/postgres.sh when
  PostgreSQL is installed and we are root; else skipped);
- plain Radicale 3.9 (``python -m radicale``, multifilesystem), started by this script.

Every calendar-query answer is checked against an independent expansion (recurring-ical-events over the
objects the script wrote): a fast wrong answer stops the benchmark.

    python bench/storage.py [--n 1000] [--repeat 20] [--postgres URL]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bcrypt
import icalendar
import recurring_ical_events
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.auth import UserRecord, UsersFile  # noqa: E402

AUTH = ("crm", "crm-secret")
BASE = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)  # the fill spreads events over a year from here
WEEK = (datetime(2027, 6, 7, tzinfo=UTC), datetime(2027, 6, 14, tzinfo=UTC))
DAV = "{DAV:}"
BERLIN = (
    "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n"
    "DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\nBEGIN:STANDARD\r\n"
    "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nDTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n"
    "END:STANDARD\r\nEND:VTIMEZONE\r\n"
)


def obj(n: int) -> str:
    """Event number ``n``: every third weekly-recurring (EXDATE + override), every fifth in Berlin time,
    every seventh all-day; spread over a year."""
    start = BASE + timedelta(hours=7 * n % (365 * 24))
    head = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calrelay bench//EN\r\n"
    stamp = "DTSTAMP:20270101T000000Z\r\n"
    uid = f"UID:bench-{n}\r\n"
    if n % 7 == 0:
        day = start.date()
        body = (f"BEGIN:VEVENT\r\n{uid}{stamp}DTSTART;VALUE=DATE:{day:%Y%m%d}\r\n"
                f"DTEND;VALUE=DATE:{day + timedelta(days=1):%Y%m%d}\r\nSUMMARY:all-day {n}\r\nEND:VEVENT\r\n")
        return head + body + "END:VCALENDAR\r\n"
    berlin = n % 5 == 0
    fmt = (lambda d: f";TZID=Europe/Berlin:{d:%Y%m%dT%H%M%S}") if berlin else (lambda d: f":{d:%Y%m%dT%H%M%SZ}")
    when = start.replace(tzinfo=None) if berlin else start
    end = when + timedelta(minutes=45)
    if n % 3 == 0:
        body = (f"BEGIN:VEVENT\r\n{uid}{stamp}DTSTART{fmt(when)}\r\nDTEND{fmt(end)}\r\n"
                f"RRULE:FREQ=WEEKLY;COUNT=30\r\nEXDATE{fmt(when + timedelta(weeks=2))}\r\nSUMMARY:weekly {n}\r\n"
                "END:VEVENT\r\n"
                f"BEGIN:VEVENT\r\n{uid}{stamp}RECURRENCE-ID{fmt(when + timedelta(weeks=3))}\r\n"
                f"DTSTART{fmt(when + timedelta(weeks=3, days=1))}\r\nDTEND{fmt(end + timedelta(weeks=3, days=1))}\r\n"
                f"SUMMARY:moved {n}\r\nEND:VEVENT\r\n")
    else:
        body = (f"BEGIN:VEVENT\r\n{uid}{stamp}DTSTART{fmt(when)}\r\nDTEND{fmt(end)}\r\nSUMMARY:single {n}\r\n"
                "END:VEVENT\r\n")
    return head + (BERLIN if berlin else "") + body + "END:VCALENDAR\r\n"


def expected_in(texts: dict[str, str], start: datetime, end: datetime) -> set[str]:
    """Independent answer: the hrefs with an instance overlapping [start, end)."""
    return {href for href, text in texts.items()
            if recurring_ical_events.of(icalendar.Calendar.from_ical(text)).between(start, end)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited: " + (process.stderr.read().decode() if process.stderr else ""))
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        time.sleep(0.1)
    raise RuntimeError("server did not start")


@contextlib.contextmanager
def calrelay(root: Path, database: str | None) -> Iterator[str]:
    data = root / "calrelay-data"
    data.mkdir(parents=True)
    UsersFile(data / "users").write({"crm": UserRecord("crm", bcrypt.hashpw(b"crm-secret", bcrypt.gensalt(4)), True)})
    port = free_port()
    config = root / "calrelay.toml"
    db_line = f'database = "{database}"\n' if database else ""
    config.write_text(f'[storage]\ndata_dir = "{data}"\n{db_line}[emulator]\nport = 0\npartition_port = 0\n'
                      "[auth]\nfailed_login_delay = 0.0\n[server]\nmax_body_bytes = 50000000\n")
    with _process([sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", str(port)], port):
        yield f"http://127.0.0.1:{port}/crm/bench/"


@contextlib.contextmanager
def radicale(root: Path) -> Iterator[str]:
    port = free_port()
    config = root / "radicale.ini"
    config.write_text(f"[server]\nhosts = 127.0.0.1:{port}\n[storage]\nfilesystem_folder = {root / 'collections'}\n"
                      "[auth]\ntype = none\n[web]\ntype = none\n[logging]\nlevel = error\n")
    with _process([sys.executable, "-m", "radicale", "--config", str(config)], port):
        yield f"http://127.0.0.1:{port}/crm/bench/"


@contextlib.contextmanager
def _process(command: list[str], port: int) -> Iterator[None]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        wait_for(port, process)
        yield
    finally:
        process.terminate()
        process.wait(30)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str | None]:
    script = ROOT / ".ci" / "postgres.sh"
    if os.geteuid() != 0 or not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        yield None
        return
    folder = tempfile.mkdtemp(prefix="calrelay-bench-pg.")
    try:
        url = subprocess.run([str(script), "start", folder], check=True, capture_output=True, text=True).stdout.strip()
        yield url
    finally:
        subprocess.run([str(script), "stop", folder], check=False)


# -- measurements ------------------------------------------------------------------------------------

def session() -> requests.Session:
    s = requests.Session()
    s.auth = AUTH
    return s


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        begin = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - begin) * 1000)
    return samples


def query_body(start: datetime, end: datetime, expand: bool) -> str:
    data = (f'<C:calendar-data><C:expand start="{start:%Y%m%dT%H%M%SZ}" end="{end:%Y%m%dT%H%M%SZ}"/>'
            "</C:calendar-data>" if expand else "")
    return ('<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            f'<D:prop><D:getetag/>{data}</D:prop><C:filter><C:comp-filter name="VCALENDAR">'
            f'<C:comp-filter name="VEVENT"><C:time-range start="{start:%Y%m%dT%H%M%SZ}" '
            f'end="{end:%Y%m%dT%H%M%SZ}"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>')


def hrefs(response: requests.Response) -> set[str]:
    assert response.status_code == 207, response.text[:500]
    return {(e.text or "").rsplit("/", 1)[-1] for e in ET.fromstring(response.content).iter(f"{DAV}href")}


def sync_token(s: requests.Session, url: str, token: str = "") -> tuple[str, set[str]]:
    response = s.request("REPORT", url, headers={"Content-Type": "application/xml", "Depth": "1"}, data=(
        '<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:">'
        f"<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>"
        "<D:prop><D:getetag/></D:prop></D:sync-collection>"))
    root = ET.fromstring(response.content)
    return root.findtext(f"{DAV}sync-token") or "", hrefs(response)


def run(url: str, n: int, repeat: int) -> dict[str, list[float]]:
    s = session()
    made = s.request("MKCALENDAR", url)
    assert made.status_code == 201, made.text
    texts = {f"bench-{i}.ics": obj(i) for i in range(n)}
    put_samples: list[float] = []

    def put(href: str) -> None:
        with session() as own:
            begin = time.perf_counter()
            response = own.put(url + href, data=texts[href].encode(),
                               headers={"Content-Type": "text/calendar", "If-None-Match": "*"})
            put_samples.append((time.perf_counter() - begin) * 1000)
            assert response.status_code == 201, response.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, texts))
    results = {"PUT If-None-Match (c=8)": put_samples[-min(len(put_samples), 200):]}
    results["PROPFIND Depth 1"] = timed(lambda: s.request(
        "PROPFIND", url, headers={"Depth": "1"},
        data=b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'),
        max(3, repeat // 4))
    want = expected_in(texts, *WEEK)
    for expand in (False, True):
        got = hrefs(s.request("REPORT", url, headers={"Depth": "1"}, data=query_body(*WEEK, expand)))
        if got != want:
            raise SystemExit(f"{url}: wrong calendar-query answer: {len(got)} items, expected {len(want)}")
    results["calendar-query 1 week"] = timed(
        lambda: s.request("REPORT", url, headers={"Depth": "1"}, data=query_body(*WEEK, False)), repeat)
    results["calendar-query 1 week expand"] = timed(
        lambda: s.request("REPORT", url, headers={"Depth": "1"}, data=query_body(*WEEK, True)), repeat)
    some = list(texts)[: min(100, n)]
    multiget = ('<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
                "<D:prop><D:getetag/><C:calendar-data/></D:prop>"
                + "".join(f"<D:href>/{url.split('/', 3)[3]}{h}</D:href>" for h in some)
                + "</C:calendar-multiget>")
    results["multiget 100"] = timed(lambda: s.request("REPORT", url, headers={"Depth": "1"}, data=multiget), repeat)
    sync_samples = []
    for round_ in range(max(3, repeat // 4)):
        token, _ = sync_token(s, url)
        changed = set()
        for k in range(10):
            href = some[(round_ * 10 + k) % len(some)]
            changed.add(href)
            s.put(url + href, data=texts[href].replace("SUMMARY:", f"SUMMARY:r{round_} ", 1).encode(),
                  headers={"Content-Type": "text/calendar"})
        begin = time.perf_counter()
        _, got = sync_token(s, url, token)
        sync_samples.append((time.perf_counter() - begin) * 1000)
        if got != changed:
            raise SystemExit(f"{url}: sync-collection reported {sorted(got)}, expected {sorted(changed)}")
    results["sync-collection after 10"] = sync_samples
    results["GET"] = timed(lambda: s.get(url + some[0]), repeat)
    return results


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="events in the calendar (default 1000)")
    parser.add_argument("--repeat", type=int, default=20, help="samples per read measurement")
    parser.add_argument("--postgres", help="a PostgreSQL server URL (postgresql+psycopg://…/DB)")
    args = parser.parse_args()
    figures: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="calrelay-bench-") as folder:
        root = Path(folder)
        with calrelay(root / "sqlite", None) as url:
            figures["calrelay SQLite"] = run(url, args.n, args.repeat)
        with contextlib.ExitStack() as stack:
            pg = args.postgres or stack.enter_context(throwaway_postgres())
            if pg:
                with calrelay(root / "postgres", pg) as url:
                    figures["calrelay PostgreSQL"] = run(url, args.n, args.repeat)
            else:
                print("PostgreSQL: skipped (no --postgres URL and no local PostgreSQL to start as root)")
        (root / "radicale").mkdir()
        with radicale(root / "radicale") as url:
            figures["plain Radicale"] = run(url, args.n, args.repeat)
    names = list(figures)
    print(f"\nN = {args.n} events; p50 / p95 in ms; ratio = plain Radicale p50 / this p50 (higher is faster)")
    print(f"{'measurement':32}" + "".join(f"{name:>28}" for name in names))
    for measurement in figures[names[0]]:
        row = f"{measurement:32}"
        base = statistics.median(figures["plain Radicale"][measurement])
        for name in names:
            samples = figures[name][measurement]
            ratio = "" if name == "plain Radicale" else f" ({base / statistics.median(samples):.1f}x)"
            row += f"{f'{p(samples, 0.5):.1f} / {p(samples, 0.95):.1f}{ratio}':>28}"
        print(row)
    print("calendar-query answers verified against recurring-ical-events; sync answers against the changes made")


if __name__ == "__main__":
    main()
