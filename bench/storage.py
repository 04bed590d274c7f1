"""Benchmark of the SQL storage against plain Radicale 3.9 on the same data.

Fills one calendar with N events (a third weekly-recurring with an EXDATE and a moved override, in
Europe/Berlin and UTC, some all-day) on each server, then reports p50/p95 in milliseconds of:
PUT with ``If-None-Match: *`` at concurrency 8 (200 new events on top of the N), PROPFIND Depth 1, a
one-week calendar-query, the same with ``expand`` (each also alone as the first request, before calrelay's
caches of parsed and expanded objects hold anything), a multiget of 100, an incremental sync-collection
after 10 changes, and GET, and the server's resident memory at the end. The fill is a bulk path, the same data
for every server (PUTting 10,000 events one by one into plain Radicale costs O(N) each: its UID check reads
the whole collection): plain Radicale gets the events as files of its storage; calrelay a SQLite database
filled once through its storage plugin (one transaction; kept in $TMPDIR/calrelay-bench-fills per N and
day), whose rows are copied as they are into PostgreSQL. Servers:

- calrelay on SQLite (``calrelay serve`` in a subprocess, a fresh data directory);
- calrelay on PostgreSQL (``--postgres URL`` of a server; else a throwaway cluster via .ci/postgres.sh when
  PostgreSQL is installed and we are root; else skipped);
- plain Radicale 3.9 (``python -m radicale``, multifilesystem), started by this script.

Every calendar-query answer is checked against an independent expansion (recurring-ical-events over the
objects the script wrote): its hrefs and, with ``expand``, the start of every instance it returns; a fast
wrong answer stops the benchmark.

    python bench/storage.py [--n 1000] [--repeat 20] [--postgres URL] [--only NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import bcrypt
import icalendar
import recurring_ical_events
import requests
import sqlalchemy as sa

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


def _instant(value: date | datetime) -> str:
    """An instance's start as a comparable string: a date as it is, a time in UTC (floating read as UTC)."""
    if not isinstance(value, datetime):
        return value.isoformat()
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()


def expected_instances(texts: dict[str, str], start: datetime, end: datetime) -> set[tuple[str, str]]:
    """Independent answer of an expanding query: (href, start) of every instance overlapping [start, end)."""
    return {(href, _instant(event["DTSTART"].dt)) for href, text in texts.items()
            for event in recurring_ical_events.of(icalendar.Calendar.from_ical(text)).between(start, end)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited: " + log.read_text()[-2000:])
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        time.sleep(0.1)
    raise RuntimeError("server did not start")


PUTS = 200  # the PUT measurement: this many new events, on top of the fill


FILLS = Path(tempfile.gettempdir()) / "calrelay-bench-fills"  # filled SQLite databases, kept between runs


def filled_database(n: int) -> Path:
    """A SQLite database holding the calendar ``crm/bench`` with events 0..n-1, as calrelay's storage writes it
    (through the storage plugin, one transaction); made once per N and day (the index horizon moves)."""
    digest = hashlib.sha256("".join(obj(i) for i in range(min(n, 100))).encode()).hexdigest()[:12]
    path = FILLS / f"n{n}-{datetime.now(UTC):%Y%m%d}-{digest}.db"
    if path.exists():
        return path
    FILLS.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="fill.", dir=FILLS))
    begin = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--fill-into", str(folder), "--n", str(n)], check=True, cwd=ROOT)
    (folder / "calrelay.db").rename(path)
    shutil.rmtree(folder)
    print(f"filled {n} events through the storage in {time.perf_counter() - begin:.0f} s -> {path}", flush=True)
    return path


def fill_into(data: Path, n: int) -> None:
    import radicale.storage
    from radicale import item as radicale_item

    from proxy import config
    from proxy.engine import radicale_configuration

    settings = config.load(None, {"storage": {"data_dir": str(data)}})
    storage = radicale.storage.load(radicale_configuration(settings))
    try:
        with storage.acquire_lock("w", "crm"):
            storage.create_collection("/crm/bench/", props={"tag": "VCALENDAR"})
            collection = next(iter(storage.discover("/crm/bench/")))
            for i in range(n):
                item = radicale_item.Item(collection_path="crm/bench", text=obj(i))
                item.prepare()
                collection.upload(f"bench-{i}.ics", item)
    finally:
        storage.close()


def copy_database(source: Path, target_url: str) -> None:
    """The bulk fill for PostgreSQL: the storage's rows of a filled SQLite database, copied as they are."""
    from plugins.sqlstore import tables
    from proxy import database, schema

    reader, writer = database.create_engine(f"sqlite:///{source}"), database.create_engine(target_url)
    try:
        schema.prepare(writer)
        with database.reading(reader) as src, database.writing(writer) as dst:
            for table in (tables.collections, tables.items, tables.changes, tables.instances):
                rows = [dict(row) for row in src.execute(sa.select(table)).mappings()]
                for start in range(0, len(rows), 5000):
                    dst.execute(table.insert(), rows[start:start + 5000])
            dst.execute(sa.text("SELECT setval(pg_get_serial_sequence('dav_collections', 'id'), "
                                "(SELECT max(id) FROM dav_collections))"))
    finally:
        reader.dispose()
        writer.dispose()


def fill(folder: Path, n: int) -> None:
    """The bulk fill: a Radicale file-storage folder holding the calendar ``crm/bench`` with events 0..n-1."""
    calendar = folder / "collection-root" / "crm" / "bench"
    calendar.mkdir(parents=True)
    (calendar / ".Radicale.props").write_text(json.dumps({"tag": "VCALENDAR"}))
    for i in range(n):
        (calendar / f"bench-{i}.ics").write_bytes(obj(i).encode())


@contextlib.contextmanager
def calrelay(root: Path, database: str | None, filled: Path) -> Iterator[str]:
    """calrelay serving a copy of the ``filled`` database (SQLite, or copied into ``database``)."""
    data = root / "calrelay-data"
    data.mkdir(parents=True)
    UsersFile(data / "users").write({"crm": UserRecord("crm", bcrypt.hashpw(b"crm-secret", bcrypt.gensalt(4)), True)})
    port = free_port()
    config = root / "calrelay.toml"
    db_line = f'database = "{database}"\n' if database else ""
    config.write_text(f'[storage]\ndata_dir = "{data}"\n{db_line}[emulator]\nport = 0\npartition_port = 0\n'
                      "[auth]\nfailed_login_delay = 0.0\n[server]\nmax_body_bytes = 50000000\n")
    begin = time.perf_counter()
    if database:
        copy_database(filled, database)
    else:
        shutil.copyfile(filled, data / "calrelay.db")
        (data / "calrelay.db").chmod(0o600)
    print(f"{root.name}: filled in {time.perf_counter() - begin:.0f} s", flush=True)
    with _process([sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", str(port)], port,
                  root / "server.log"):
        begin = time.perf_counter()
        wait_idle(_server[0])
        print("{}: start-up work done after {:.0f} s, RSS {:.0f} MB (peak {:.0f} MB)".format(
            root.name, time.perf_counter() - begin, *rss_mb(_server[0])), flush=True)
        yield f"http://127.0.0.1:{port}/crm/bench/"


def wait_idle(process: subprocess.Popen, timeout: float = 900) -> None:
    """Wait until the server has done its start-up work (the index horizon is extended): measured while it
    runs, a request shares the interpreter with it. Idle: no
    thread of it running or waiting for a CPU in 2 s of samples (its CPU time alone misleads on a loaded
    machine, where a busy server gets little of it)."""
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
        states = [Path(stat).read_text().rsplit(")", 1)[1].split()[0]
                  for stat in glob.glob(f"/proc/{process.pid}/task/*/stat")]
        quiet = 0 if "R" in states else quiet + 1


@contextlib.contextmanager
def radicale(root: Path, filled: Path) -> Iterator[str]:
    shutil.copytree(filled, root / "collections")
    port = free_port()
    config = root / "radicale.ini"
    config.write_text(f"[server]\nhosts = 127.0.0.1:{port}\n[storage]\nfilesystem_folder = {root / 'collections'}\n"
                      "[auth]\ntype = none\n[web]\ntype = none\n[logging]\nlevel = error\n")
    with _process([sys.executable, "-m", "radicale", "--config", str(config)], port, root / "server.log"):
        yield f"http://127.0.0.1:{port}/crm/bench/"


#: The server process of the current measurement (its RSS is read at the end of a run).
_server: list[subprocess.Popen] = []


@contextlib.contextmanager
def _process(command: list[str], port: int, log: Path) -> Iterator[None]:
    # The server's output goes to a file: a pipe nobody reads fills up and blocks the server mid-run.
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
    _server[:] = [process]
    try:
        wait_for(port, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:  # still busy: do not hide what ended the run
            process.kill()
            process.wait()
        lines = log.read_text(errors="replace").splitlines()
        warnings = [line for line in lines if "WARNING" in line or "ERROR" in line]
        if warnings:
            print(f"{log}: {len(warnings)} warnings or errors, e.g. {warnings[:3]}")


def rss_mb(process: subprocess.Popen) -> tuple[float, float]:
    """The server's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines())
    return tuple(int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


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


#: A measurement stops taking samples after this many seconds (at least two samples): plain Radicale's
#: expanding query at N = 10,000 takes minutes.
BUDGET = 60.0


def timed(fn: Callable[[], object], repeat: int, first: float | None = None) -> list[float]:
    """``repeat`` samples in ms (``first``: one already taken), fewer when they exceed :data:`BUDGET`."""
    samples = [] if first is None else [first]
    spent = sum(samples) / 1000
    while len(samples) < repeat and (len(samples) < 2 or spent < BUDGET):
        begin = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - begin) * 1000)
        spent += samples[-1] / 1000
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


def instances(response: requests.Response) -> set[tuple[str, str]]:
    """(href, start) of every VEVENT in the calendar-data of a REPORT answer."""
    found = set()
    for answer in ET.fromstring(response.content).iter(f"{DAV}response"):
        href = (answer.findtext(f"{DAV}href") or "").rsplit("/", 1)[-1]
        for data in answer.iter("{urn:ietf:params:xml:ns:caldav}calendar-data"):
            for event in icalendar.Calendar.from_ical(data.text or "").walk("VEVENT"):
                found.add((href, _instant(event["DTSTART"].dt)))
    return found


def sync_token(s: requests.Session, url: str, token: str = "") -> tuple[str, set[str]]:
    response = s.request("REPORT", url, headers={"Content-Type": "application/xml", "Depth": "1"}, data=(
        '<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:">'
        f"<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>"
        "<D:prop><D:getetag/></D:prop></D:sync-collection>"))
    root = ET.fromstring(response.content)
    return root.findtext(f"{DAV}sync-token") or "", hrefs(response)


WRONG: list[tuple[str, str]] = []  # (server, what) of the wrong answers seen


def run(name: str, url: str, n: int, repeat: int, want: set[str], want_instances: set[tuple[str, str]]
        ) -> dict[str, list[float]]:
    s = session()
    texts = {f"bench-{i}.ics": obj(i) for i in range(n + PUTS)}
    put_samples: list[float] = []

    def put(href: str) -> None:
        with session() as own:
            begin = time.perf_counter()
            response = own.put(url + href, data=texts[href].encode(),
                               headers={"Content-Type": "text/calendar", "If-None-Match": "*"})
            put_samples.append((time.perf_counter() - begin) * 1000)
            assert response.status_code == 201, response.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, list(texts)[n:]))
    results = {"PUT If-None-Match (c=8)": put_samples}
    results["PROPFIND Depth 1"] = timed(lambda: s.request(
        "PROPFIND", url, headers={"Depth": "1"},
        data=b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'),
        max(3, repeat // 4))
    checked: dict[bool, float] = {}
    for expand in (False, True):
        begin = time.perf_counter()
        response = s.request("REPORT", url, headers={"Depth": "1"}, data=query_body(*WEEK, expand))
        checked[expand] = (time.perf_counter() - begin) * 1000
        got = hrefs(response)
        if expand and got == want and (expanded := instances(response)) != want_instances:
            WRONG.append((name, f"calendar-query (expand): {len(expanded)} instances, expected {len(want_instances)}; "
                                f"extra {sorted(expanded - want_instances)[:3]}, "
                                f"missing {sorted(want_instances - expanded)[:3]}"))
            print(WRONG[-1], flush=True)
        elif got != want:
            # Recorded, not fatal: plain Radicale's expand keeps an instance whose override moved it out of
            # the range (its answer is wrong too); calrelay's must be right (main fails otherwise).
            WRONG.append((name, f"calendar-query (expand={expand}): {len(got)} items, expected {len(want)}; "
                                f"extra {sorted(got - want)[:5]}, missing {sorted(want - got)[:5]}"))
            print(WRONG[-1], flush=True)
    # The checked request is the first sample (for calrelay, the one that fills its cache of parsed items).
    results["calendar-query 1 week"] = timed(
        lambda: s.request("REPORT", url, headers={"Depth": "1"}, data=query_body(*WEEK, False)), repeat,
        checked[False])
    results["calendar-query 1 week expand"] = timed(
        lambda: s.request("REPORT", url, headers={"Depth": "1"}, data=query_body(*WEEK, True)), repeat,
        checked[True])
    # The first requests alone: calrelay's caches of parsed and expanded objects are empty then.
    results["calendar-query 1 week, first"] = [checked[False]]
    results["the same with expand, first"] = [checked[True]]
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
    now, peak = rss_mb(_server[0])
    results["server RSS MB (now, peak)"] = [now, peak]
    return results


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="events in the calendar (default 1000)")
    parser.add_argument("--repeat", type=int, default=20, help="samples per read measurement")
    parser.add_argument("--postgres", help="a PostgreSQL server URL (postgresql+psycopg://…/DB)")
    parser.add_argument("--only", default="sqlite,postgres,radicale",
                        help="comma-separated servers to measure (default sqlite,postgres,radicale)")
    parser.add_argument("--fill-into", type=Path, help=argparse.SUPPRESS)  # the fill's own subprocess
    args = parser.parse_args()
    if args.fill_into:
        fill_into(args.fill_into, args.n)
        return
    only = set(args.only.split(","))
    figures: dict[str, dict[str, list[float]]] = {}
    texts = {f"bench-{i}.ics": obj(i) for i in range(args.n + PUTS)}
    want = expected_in(texts, *WEEK)
    want_instances = expected_instances(texts, *WEEK)
    with tempfile.TemporaryDirectory(prefix="calrelay-bench-") as folder:
        root = Path(folder)
        fill(root / "filled", args.n)
        filled = filled_database(args.n) if only & {"sqlite", "postgres"} else root
        if "sqlite" in only:
            with calrelay(root / "sqlite", None, filled) as url:
                figures["calrelay SQLite"] = run("calrelay SQLite", url, args.n, args.repeat, want, want_instances)
        with contextlib.ExitStack() as stack:
            pg = "postgres" in only and (args.postgres or stack.enter_context(throwaway_postgres()))
            if pg:
                with calrelay(root / "postgres", pg, filled) as url:
                    figures["calrelay PostgreSQL"] = run("calrelay PostgreSQL", url, args.n, args.repeat, want,
                                                         want_instances)
            elif "postgres" in only:
                print("PostgreSQL: skipped (no --postgres URL and no local PostgreSQL to start as root)")
        if "radicale" in only:
            (root / "radicale").mkdir()
            with radicale(root / "radicale", root / "filled") as url:
                figures["plain Radicale"] = run("plain Radicale", url, args.n, args.repeat, want, want_instances)
    names = list(figures)
    print(f"\nN = {args.n} events; p50 / p95 in ms; ratio = plain Radicale p50 / this p50 (higher is faster)")
    print(f"{'measurement':32}" + "".join(f"{name:>28}" for name in names))
    for measurement in figures[names[0]]:
        row = f"{measurement:32}"
        base = statistics.median(figures["plain Radicale"][measurement]) if "plain Radicale" in figures else None
        for name in names:
            samples = figures[name][measurement]
            ratio = "" if name == "plain Radicale" or base is None or measurement.startswith("server RSS") \
                else f" ({base / statistics.median(samples):.1f}x)"
            row += f"{f'{p(samples, 0.5):.1f} / {p(samples, 0.95):.1f}{ratio}':>28}"
        print(row)
    print("calendar-query answers verified against recurring-ical-events; sync answers against the changes made")
    for name, wrong in WRONG:
        print(f"WRONG ({name}): {wrong}")
    if any(name != "plain Radicale" for name, _ in WRONG):
        raise SystemExit("calrelay answered a query wrong")


if __name__ == "__main__":
    main()
