"""Benchmark of availability: 3 calendars x 5,000 events, queries of one week, one month and one year.

A third of the events recur (daily, weekly, monthly; bounded and unbounded), times are in UTC, in two zones
with VTIMEZONE and floating; some are all-day and some FREE. Drives the service and its index directly (the
HTTP route adds JSON rendering on top). Prints the cold first query, then p50/p95 of warm queries at random
window starts, and the cost of a query right after one item changed.

    python bench/availability.py [--events 5000] [--runs 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from proxy.availability.instances import normalize_address
from proxy.availability.service import AvailabilityService, Freshness, UserView
from proxy.model import CALENDAR_KIND_PROP, MIRROR_ROLE_PROP

USER = "alice@example.com"
YEAR = datetime(2026, 1, 1, tzinfo=UTC)

PARIS = """BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r
DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\nBEGIN:STANDARD\r
TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nDTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r
END:STANDARD\r\nEND:VTIMEZONE\r\n"""
NEW_YORK = """BEGIN:VTIMEZONE\r\nTZID:America/New_York\r\nBEGIN:DAYLIGHT\r\nTZOFFSETFROM:-0500\r\nTZOFFSETTO:-0400\r
DTSTART:20070311T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\r\nEND:DAYLIGHT\r\nBEGIN:STANDARD\r
TZOFFSETFROM:-0400\r\nTZOFFSETTO:-0500\r\nDTSTART:20071104T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\r
END:STANDARD\r\nEND:VTIMEZONE\r\n"""


@dataclass
class Item:
    href: str
    etag: str
    text: str


@dataclass
class Calendar:
    path: str
    props: dict[str, str]
    etag: str


class MemoryStore:
    def __init__(self) -> None:
        self.calendars: dict[str, Calendar] = {}
        self.items: dict[str, dict[str, Item]] = {}

    def list_calendars(self, user: str) -> list[Calendar]:
        return list(self.calendars.values())

    def read_items(self, path: str) -> list[Item]:
        return list(self.items[path].values())

    def put(self, path: str, item: Item) -> None:
        self.items[path][item.href] = item
        self.calendars[path].etag = f"{path}-{time.monotonic_ns()}"


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


def build(events: int, rng: random.Random) -> MemoryStore:
    store = MemoryStore()
    roles = [("/alice/bookings/", {CALENDAR_KIND_PROP: "round-robin"}),
             ("/alice/icloud-work/", {MIRROR_ROLE_PROP: "primary"}),
             ("/alice/icloud-home/", {MIRROR_ROLE_PROP: "conflict"})]
    for path, props in roles:
        store.calendars[path] = Calendar(path, props, f"{path}-0")
        store.items[path] = {
            f"{n}.ics": Item(f"{n}.ics", f"e{n}", event_text(rng, f"{path}{n}")) for n in range(events)
        }
    return store


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events per calendar")
    parser.add_argument("--runs", type=int, default=200, help="warm queries per window size")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    store = build(args.events, rng)
    service = AvailabilityService(store)
    view = UserView(USER, ZoneInfo("Europe/Paris"), frozenset({normalize_address(USER)}))
    freshness = Freshness(datetime.now(UTC), timedelta(minutes=10), {}, relay_present=False)

    def query(start: datetime, length: timedelta) -> float:
        began = time.perf_counter()
        service.availability(view, start, start + length, freshness, slot=timedelta(minutes=30))
        return (time.perf_counter() - began) * 1000

    print(f"{len(store.calendars)} calendars x {args.events} events, zone {view.zone.key}")
    cold_week = query(YEAR + timedelta(days=60), timedelta(days=7))
    print(f"cold: first one-week query (parse everything, expand 1-2 buckets): {cold_week:8.1f} ms")
    cold_year = query(YEAR, timedelta(days=396))
    print(f"cold: one 13-month query (expand every bucket of the year):       {cold_year:8.1f} ms")
    for name, length, latest_start in (("week", timedelta(days=7), 358), ("month", timedelta(days=31), 334),
                                       ("year", timedelta(days=365), 31)):
        samples = [query(YEAR + timedelta(days=rng.uniform(0, latest_start)), length) for _ in range(args.runs)]
        p50, p95 = percentiles(samples)
        print(f"warm {name:5}: p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  ({args.runs} random windows in 2026)")
    after_change = []
    for n in range(20):
        path = "/alice/icloud-work/"
        store.put(path, Item("0.ics", f"changed-{n}", event_text(rng, f"{path}changed")))
        after_change.append(query(YEAR + timedelta(days=rng.uniform(0, 358)), timedelta(days=7)))
    p50, p95 = percentiles(after_change)
    print(f"week right after one item changed: p50 {p50:7.2f} ms  p95 {p95:7.2f} ms")


if __name__ == "__main__":
    main()
