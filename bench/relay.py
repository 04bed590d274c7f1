"""Benchmark of the CRM -> iCloud push: latency of one appointment, and throughput of a burst.

Runs calrelay in-process with its built-in iCloud emulator, which adds ``--latency-ms`` to every request
(iCloud answers in tens of milliseconds). A user is linked to the emulator's demo account; appointments are
PUT over HTTP as a CRM would, and arrival is observed in the emulator's store.

- latency: one appointment at a time, time from the CRM's PUT returning to the event existing in iCloud;
- backlog: ``--burst`` appointments already stored when the account is linked: time until all are in iCloud,
  the relay's own throughput, against what one request at a time would need;
- live burst: the same number PUT by 8 CRM threads while linked: how far behind the CRM the relay ends.

    python bench/relay.py [--latency-ms 30] [--samples 50] [--burst 1000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bcrypt
import requests
from aiohttp import web

from proxy import config
from proxy.app import make_app
from proxy.auth import UserRecord, UsersFile
from proxy.keys import EMULATOR, RELAY

CRM = ("crm", "crm-secret")
START = datetime(2027, 6, 1, 8, 0, tzinfo=UTC)


def appointment(uid: str, start: datetime) -> bytes:
    end = start + timedelta(minutes=30)
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calrelay bench//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20270101T000000Z\r\nDTSTART:{start:%Y%m%dT%H%M%SZ}\r\n"
        f"DTEND:{end:%Y%m%dT%H%M%SZ}\r\nSUMMARY:Benchmark\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


class Server:
    """calrelay (with the embedded emulator) on an ephemeral port, in a background event loop."""

    def __init__(self, data_dir: Path, concurrency: int, poll_interval: float = 3600, database: str | None = None,
                 accounts_file: Path | None = None) -> None:
        settings = config.load(None, {
            "storage": {"data_dir": str(data_dir), **({"database": database} if database else {})},
            "emulator": {"port": 0, "partition_port": 0,
                         **({"accounts_file": str(accounts_file)} if accounts_file else {})},
            "upstream": {"max_concurrency": concurrency, "poll_interval": poll_interval},
        })
        UsersFile(settings.users_file).write({"crm": UserRecord("crm", bcrypt.hashpw(CRM[1].encode(),
                                                                                     bcrypt.gensalt(4)), True)})
        self.app = make_app(settings)
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(self.app, access_log=None)
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.run(self._start())

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/"

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(600)

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)

    def in_icloud(self, apple_id: str | None = None) -> set[str]:
        store = self.app[EMULATOR].emulator.store
        if apple_id is None:
            (state,) = store.accounts.values()
        else:
            state = store.by_apple_id(apple_id)
        return {obj.uid for obj in list(state.collections["work"].objects.values())}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=30.0, help="added to every emulator request")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8, help="[upstream] max_concurrency")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("radicale").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as directory:
        server = Server(Path(directory) / "data", args.concurrency)
        try:
            session = requests.Session()
            session.auth = CRM
            session.request("MKCALENDAR", server.url + "crm/sales/", timeout=30).raise_for_status()
            session.request(
                "PROPPATCH", server.url + "crm/sales/", timeout=30,
                data=b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:CR="urn:calrelay"><D:set>'
                b"<D:prop><CR:calendar-kind>round-robin</CR:calendar-kind></D:prop></D:set></D:propertyupdate>",
            ).raise_for_status()
            session.put(server.url + "api/v1/users/crm/link", timeout=30, json={
                "apple_id": "demo@icloud.test", "app_password": "abcd-efgh-ijkl-mnop", "primary": "work",
            }).raise_for_status()
            while server.app[RELAY].worker("crm") is None or server.app[RELAY].worker("crm").passes == 0:
                time.sleep(0.01)
            server.app[EMULATOR].set_faults(latency_ms=args.latency_ms)

            latencies = []
            for number in range(args.samples):
                uid = f"lat-{number}"
                session.put(server.url + f"crm/sales/{uid}.ics", data=appointment(uid, START + timedelta(hours=number)),
                            headers={"Content-Type": "text/calendar"}, timeout=30).raise_for_status()
                sent = time.perf_counter()
                while uid not in server.in_icloud():
                    time.sleep(0.001)
                latencies.append(time.perf_counter() - sent)

            def put(prefix: str, number: int, offset_days: int) -> None:
                uid = f"{prefix}-{number}"
                requests.put(server.url + f"crm/sales/{uid}.ics", auth=CRM, timeout=60,
                             data=appointment(uid, START + timedelta(days=offset_days, minutes=30 * number)),
                             headers={"Content-Type": "text/calendar"}).raise_for_status()

            # Backlog: unlink, store the appointments, link again and time the catch-up.
            session.delete(server.url + "api/v1/users/crm/link", timeout=30).raise_for_status()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: put("backlog", n, 60), range(args.burst)))
            wanted = {f"backlog-{n}" for n in range(args.burst)}
            started = time.perf_counter()
            session.put(server.url + "api/v1/users/crm/link", timeout=30, json={
                "apple_id": "demo@icloud.test", "app_password": "abcd-efgh-ijkl-mnop", "primary": "work",
            }).raise_for_status()
            while not wanted <= server.in_icloud():
                time.sleep(0.01)
            backlog = time.perf_counter() - started

            wanted = {f"burst-{n}" for n in range(args.burst)}
            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: put("burst", n, 30), range(args.burst)))
            written = time.perf_counter() - started
            while not wanted <= server.in_icloud():
                time.sleep(0.01)
            lag = time.perf_counter() - started - written
        finally:
            server.stop()

    one_at_a_time = args.burst * args.latency_ms / 1000
    print(f"push latency, {args.samples} appointments one by one, emulator latency {args.latency_ms:.0f} ms:")
    print(f"  p50 {percentile(latencies, 0.5) * 1000:7.1f} ms   p95 {percentile(latencies, 0.95) * 1000:7.1f} ms"
          f"   mean {statistics.mean(latencies) * 1000:7.1f} ms")
    print(f"backlog of {args.burst} appointments relayed after linking (max_concurrency {args.concurrency}):")
    print(f"  {backlog:6.2f} s = {args.burst / backlog:6.1f} appointments/s; one request at a time would need "
          f"{one_at_a_time:6.1f} s of upstream latency alone (x{one_at_a_time / backlog:.1f} faster)")
    print(f"live burst of {args.burst} CRM writes (8 threads) taking {written:6.2f} s:")
    print(f"  the last one reached iCloud {lag * 1000:7.1f} ms after the CRM finished writing")


if __name__ == "__main__":
    main()
