"""Server memory at 100,000 events: calrelay (SQLite) serving one calendar of N events, its RSS after the
heaviest reads (PROPFIND Depth 1 of the whole calendar, the one-week calendar-query with and without
``expand``, a sync-collection from scratch).

The calendar is ``bench/storage.py``'s fill of 10,000 events (made once through the storage plugin) copied
N / 10,000 times in SQL, each copy with its own hrefs, UIDs and ETags: filling 100,000 events one by one
through the storage would take over an hour here. The copies overlap in time, so a week holds ten times the
events of the 10,000 calendar.

    python bench/storage_rss.py [--n 100000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import storage as bench

BASE = 10_000


def replicate(source: Path, target: Path, copies: int) -> None:
    shutil.copyfile(source, target)
    target.chmod(0o600)
    engine = sa.create_engine(f"sqlite:///{target}")
    with engine.begin() as connection:
        for k in range(1, copies):
            tag = f"c{k}-"
            connection.execute(sa.text(
                "INSERT INTO dav_items (collection_id, href, uid, etag, name, component, text, first_start,"
                " last_end, recurring, indexed_until, modified) SELECT collection_id, :tag || href, :tag || uid,"
                " '\"' || :tag || substr(etag, 2), name, component, replace(text, 'UID:bench-', 'UID:' || :tag ||"
                " 'bench-'), first_start, last_end, recurring, indexed_until, modified FROM dav_items"
                " WHERE href LIKE 'bench-%'"), {"tag": tag})
            connection.execute(sa.text(
                "INSERT INTO dav_instances (collection_id, href, start, \"end\", floating, transparent, status)"
                " SELECT collection_id, :tag || href, start, \"end\", floating, transparent, status"
                " FROM dav_instances WHERE href LIKE 'bench-%'"), {"tag": tag})
            connection.execute(sa.text(
                "INSERT INTO dav_changes (collection_id, href, revision, deleted, changed)"
                " SELECT collection_id, :tag || href, revision, deleted, changed FROM dav_changes"
                " WHERE href LIKE 'bench-%'"), {"tag": tag})
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="events (a multiple of 10,000; default 100,000)")
    args = parser.parse_args()
    copies = max(1, args.n // BASE)
    filled = bench.filled_database(BASE)
    with tempfile.TemporaryDirectory(prefix="calrelay-bench-rss-") as folder:
        root = Path(folder)
        big = root / "big.db"
        begin = time.perf_counter()
        replicate(filled, big, copies)
        print(f"{copies * BASE} events in {time.perf_counter() - begin:.0f} s", flush=True)
        with bench.calrelay(root / "sqlite", None, big) as url:
            s = bench.session()
            print("after start: RSS {:.0f} MB (peak {:.0f} MB)".format(*bench.rss_mb(bench._server[0])))
            steps = {
                "PROPFIND Depth 1": lambda: s.request("PROPFIND", url, headers={"Depth": "1"}, data=(
                    b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop>'
                    b"</D:propfind>")),
                "calendar-query 1 week": lambda: s.request(
                    "REPORT", url, headers={"Depth": "1"}, data=bench.query_body(*bench.WEEK, False)),
                "calendar-query 1 week expand": lambda: s.request(
                    "REPORT", url, headers={"Depth": "1"}, data=bench.query_body(*bench.WEEK, True)),
                "sync-collection from scratch": lambda: bench.sync_token(s, url),
            }
            for name, step in steps.items():
                begin = time.perf_counter()
                step()
                took = time.perf_counter() - begin
                now, peak = bench.rss_mb(bench._server[0])
                print(f"{name:32} {took * 1000:8.0f} ms   RSS {now:5.0f} MB (peak {peak:5.0f} MB)", flush=True)


if __name__ == "__main__":
    main()
