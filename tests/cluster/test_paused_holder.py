"""A real process holds a lease, is SIGSTOPped past its expiry, another takes over, and the resumed one is fenced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import sqlalchemy as sa

from proxy.cluster.leases import FENCE_IDLE_LIMIT, acquire, fenced
from proxy.database import create_engine, metadata, writing

from .test_leases import test_metadata, writes

HOLDER = textwrap.dedent(
    """
    import sys, time
    import sqlalchemy as sa
    from proxy.cluster.leases import LeaseLost, acquire, fenced, renew
    from proxy.database import create_engine, writing
    from tests.cluster.test_leases import writes

    engine = create_engine(sys.argv[1])
    lease = acquire(engine, "alice/link", "paused", now=time.time(), ttl=1.0)
    print(lease.token, flush=True)
    sys.stdin.readline()  # the parent SIGSTOPs us here, steals the lease, resumes us and says "write"
    try:
        with writing(engine) as connection:
            fenced(connection, "alice/link", lease.token)
            connection.execute(writes.insert().values(link_key="alice/link", count=1, last_token=lease.token))
        print("written", flush=True)
    except LeaseLost:
        print("refused", renew(engine, lease, now=time.time()), flush=True)
    """
)


def test_resumed_holder_is_fenced(db_url: str) -> None:
    engine = create_engine(db_url)
    metadata.create_all(engine)
    test_metadata.create_all(engine)
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, db_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        old_token = int(child.stdout.readline())
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        lease = None
        while lease is None and time.monotonic() < deadline:  # the paused holder cannot renew: it expires
            lease = acquire(engine, "alice/link", "successor", now=time.time(), ttl=30.0)
            time.sleep(0.05)
        assert lease is not None and lease.token == old_token + 1
        with writing(engine) as connection:
            fenced(connection, "alice/link", lease.token)
            connection.execute(writes.insert().values(link_key="alice/link", count=1, last_token=lease.token))
        os.kill(child.pid, signal.SIGCONT)
        child.stdin.write("write\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "refused None"
        assert child.wait(timeout=10) == 0
        with engine.connect() as connection:
            rows = connection.execute(sa.select(writes)).all()
        assert [(row.count, row.last_token) for row in rows] == [(1, lease.token)]  # only the successor wrote
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()
        engine.dispose()


IDLE_IN_WRITE = textwrap.dedent(
    """
    import sys, time
    from proxy.cluster.leases import acquire, fenced
    from proxy.database import create_engine, writing

    engine = create_engine(sys.argv[1])
    lease = acquire(engine, "alice/link", "hung", now=time.time(), ttl=1.0)
    with writing(engine) as connection:
        fenced(connection, "alice/link", lease.token)  # the lease row is locked from here to the commit
        print("inside", flush=True)
        sys.stdin.readline()  # hangs mid-write, as a process paused there would
    """
)


def test_a_holder_hung_inside_a_write_does_not_block_the_takeover(pg_url: str) -> None:
    """PostgreSQL ends the hung transaction (FENCE_IDLE_LIMIT), which frees the locked lease row."""
    engine = create_engine(pg_url + "?options=-c%20lock_timeout%3D8000")  # without the fix: fail, not hang
    metadata.create_all(engine)
    child = subprocess.Popen([sys.executable, "-c", IDLE_IN_WRITE, pg_url], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "inside"
        started = time.monotonic()
        lease = None
        while lease is None and time.monotonic() - started < 10:  # blocks on the row lock until it is freed
            lease = acquire(engine, "alice/link", "successor", now=time.time(), ttl=30.0)
            time.sleep(0.05)
        assert lease is not None and lease.token == 2
        assert time.monotonic() - started < FENCE_IDLE_LIMIT + 2
    finally:
        child.kill()
        child.wait()
        engine.dispose()
