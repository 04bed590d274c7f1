"""Benchmark of availability: 3 calendars x 5,000 events, queries of one week, one month and one year.

A third of the events recur (daily, weekly, monthly; bounded and unbounded), times are in UTC, in two zones
with VTIMEZONE and floating; some are all-day and some FREE. The events are stored in the SQL storage
(SQLite in a temporary directory, or ``--database``), which indexes their instances; the storage is then
opened again, as after a restart, and the service reads the index as the engine does (the HTTP route adds
JSON rendering on top). Prints the first queries after the restart, then p50/p95 of queries at random window
starts, and the cost of a query right after one item changed.

    python bench/availability.py [--events 5000] [--runs 200] [--seed 1] [--database URL]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from radicale import item as radicale_item

from plugins.sqlstore.collection import Collection
from plugins.sqlstore.storage import Storage
from proxy import config
from proxy.availability.index import AvailabilityIndex
from proxy.availability.instances import normalize_address
from proxy.availability.service import AvailabilityService, Freshness, UserView
from proxy.engine import Engine, radicale_configuration
from proxy.model import CALENDAR_KIND_PROP, MIRROR_ROLE_PROP

USER = "alice"
ADDRESS = "alice@example.com"
YEAR = datetime(2026, 1, 1, tzinfo=UTC)

PARIS = """BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r
DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\nBEGIN:STANDARD\r
TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nDTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r
END:STANDARD\r\nEND:VTIMEZONE\r\n"""
NEW_YORK = """BEGIN:VTIMEZONE\r\nTZID:America/New_York\r\nBEGIN:DAYLIGHT\r\nTZOFFSETFROM:-0500\r\nTZOFFSETTO:-0400\r
DTSTART:20070311T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\r\nEND:DAYLIGHT\r\nBEGIN:STANDARD\r
TZOFFSETFROM:-0400\r\nTZOFFSETTO:-0500\r\nDTSTART:20071104T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\r
END:STANDARD\r\nEND:VTIMEZONE\r\n"""


class Store:
    """The SQL storage of a data directory (or ``--database``), read as the engine reads it for availability."""

    list_calendars = Engine.list_calendars
    read_instances = Engine.read_instances

    def __init__(self, data_dir: Path, database: str | None) -> None:
        sections: dict[str, dict[str, object]] = {"storage": {"data_dir": str(data_dir)}}
        if database:
            sections["storage"]["database"] = database
        self.storage = Storage(radicale_configuration(config.load(overrides=sections)))

    def collection(self, path: str) -> Collection:
        found = next(iter(self.storage.discover(path)))
        assert isinstance(found, Collection)
        return found

    def put_many(self, path: str, texts: dict[str, str]) -> None:
        items = []
        for href, text in texts.items():
            item = radicale_item.Item(collection_path=path.strip("/"),
                                      vobject_item=radicale_item.read_components(text)[0])
            item.prepare()
            items.append((href, item))
        with self.storage.acquire_lock("w"):
            self.collection(path).upload_many(items)

    def close(self) -> None:
        self.storage.close()


def event_text(rng: random.Random, uid: str) -> str:
    day = rng.randrange(365)
    start = datetime(2026, 1, 1) + timedelta(days=day, hours=rng.randrange(7, 19), minutes=rng.choice([0, 30]))
    length = timedelta(minutes=rng.choice([30, 45, 60, 90, 120]))
    lines = [f"UID:{uid}", "DTSTAMP:20260101T000000Z", f"SUMMARY:event {uid}"]
    zone_block = ""
    style = rng.random()
    if style < 0.1:
        lines += [f"DTSTART;VALUE=DATE:{start:%Y%m%d}", f"DTEND;VALUE=DATE:{start + timedelta(days=1):%Y%m%d}"]
    elif style < 0.4:
        lines += [f"DTSTART:{start:%Y%m%dT%H%M%S}Z", f"DTEND:{start + length:%Y%m%dT%H%M%S}Z"]
    elif style < 0.6:
        zone_block = PARIS
        lines += [f"DTSTART;TZID=Europe/Paris:{start:%Y%m%dT%H%M%S}",
                  f"DTEND;TZID=Europe/Paris:{start + length:%Y%m%dT%H%M%S}"]
    elif style < 0.8:
        zone_block = NEW_YORK
        lines += [f"DTSTART;TZID=America/New_York:{start:%Y%m%dT%H%M%S}",
                  f"DTEND;TZID=America/New_York:{start + length:%Y%m%dT%H%M%S}"]
    else:
        lines += [f"DTSTART:{start:%Y%m%dT%H%M%S}", f"DTEND:{start + length:%Y%m%dT%H%M%S}"]
    if rng.random() < 1 / 3:
        lines.append(rng.choice([
            "RRULE:FREQ=WEEKLY",
            "RRULE:FREQ=WEEKLY;COUNT=20",
            "RRULE:FREQ=WEEKLY;INTERVAL=2;UNTIL=20271231T000000Z",
            "RRULE:FREQ=DAILY;COUNT=30",
            "RRULE:FREQ=MONTHLY",
        ]))
    if rng.random() < 0.1:
        lines.append("TRANSP:TRANSPARENT")
    body = "BEGIN:VEVENT\r\n" + "".join(f"{line}\r\n" for line in lines) + "END:VEVENT\r\n"
    return "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\n" + zone_block + body + "END:VCALENDAR\r\n"


ROLES = [("/alice/bookings/", {CALENDAR_KIND_PROP: "round-robin"}),
         ("/alice/icloud-work/", {MIRROR_ROLE_PROP: "primary"}),
         ("/alice/icloud-home/", {MIRROR_ROLE_PROP: "conflict"})]


def build(store: Store, events: int, rng: random.Random) -> None:
    with store.storage.acquire_lock("w"):
        store.storage.create_collection("/alice/")
        for path, props in ROLES:
            store.storage.create_collection(path, props={"tag": "VCALENDAR", **props})
    for path, _ in ROLES:
        texts = {f"{n}.ics": event_text(rng, f"{path}{n}") for n in range(events)}
        batch = list(texts.items())
        for first in range(0, len(batch), 500):
            store.put_many(path, dict(batch[first:first + 500]))


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events per calendar")
    parser.add_argument("--runs", type=int, default=200, help="warm queries per window size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", help="a database URL (postgresql+psycopg://…); default SQLite in a temp dir")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    data = Path(tempfile.mkdtemp(prefix="calrelay-bench-availability-"))
    try:
        run(args, rng, data)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def run(args: argparse.Namespace, rng: random.Random, data: Path) -> None:
    store = Store(data, args.database)
    began = time.perf_counter()
    build(store, args.events, rng)
    print(f"{len(ROLES)} calendars x {args.events} events stored in {time.perf_counter() - began:.1f} s "
          f"({store.storage.engine.dialect.name})")
    store.close()
    # A restart: a new process state (storage, engine, reader) on the same database, nothing warmed up.
    store = Store(data, args.database)
    # Unbounded request budget: the bench measures what a query costs (a request stops at limits.request_*).
    service = AvailabilityService(store, AvailabilityIndex(request_instances=10**9, request_seconds=1e9))
    view = UserView(USER, ZoneInfo("Europe/Paris"), frozenset({normalize_address(ADDRESS)}))
    freshness = Freshness(datetime.now(UTC), timedelta(minutes=10), {}, relay_present=False)

    def query(start: datetime, length: timedelta) -> float:
        began = time.perf_counter()
        service.availability(view, start, start + length, freshness, slot=timedelta(minutes=30))
        return (time.perf_counter() - began) * 1000

    cold_week = query(YEAR + timedelta(days=60), timedelta(days=7))
    print(f"after a restart: first one-week query:  {cold_week:8.1f} ms  (events parsed: "
          f"{service.index.parsed_items})")
    cold_year = query(YEAR, timedelta(days=366))
    print(f"after a restart: first one-year query:  {cold_year:8.1f} ms  (events parsed: "
          f"{service.index.parsed_items})")
    for name, length, latest_start in (("week", timedelta(days=7), 358), ("month", timedelta(days=31), 334),
                                       ("year", timedelta(days=365), 31)):
        samples = [query(YEAR + timedelta(days=rng.uniform(0, latest_start)), length) for _ in range(args.runs)]
        p50, p95 = percentiles(samples)
        print(f"warm {name:5}: p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  ({args.runs} random windows in 2026)")
    after_change = []
    for _ in range(20):
        path = "/alice/icloud-work/"
        store.put_many(path, {"0.ics": event_text(rng, f"{path}changed")})
        after_change.append(query(YEAR + timedelta(days=rng.uniform(0, 358)), timedelta(days=7)))
    p50, p95 = percentiles(after_change)
    print(f"week right after one item changed: p50 {p50:7.2f} ms  p95 {p95:7.2f} ms")
    print(f"events parsed in all: {service.index.parsed_items}, index rows read: {service.index.rows_read}")
    store.close()


if __name__ == "__main__":
    main()
