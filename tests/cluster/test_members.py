"""Real processes as cluster members on one database: even spread, takeover after SIGKILL, hand-over on exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.engine import Engine

from proxy.cluster.leases import leases

LINKS = [f"user{n}/icloud" for n in range(9)]

MEMBER = textwrap.dedent(
    """
    import signal, sys, time
    from proxy.cluster.leases import Member
    from proxy.database import create_engine

    url, name, lease_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    links = [f"user{n}/icloud" for n in range(9)]
    member = Member(create_engine(url), name, lease_seconds=lease_seconds)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            member.step(links, now=time.time())
            time.sleep(0.25)
    finally:
        member.leave()
    """
)


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def live_holders(engine: Engine) -> Counter[str | None]:
    now = time.time()
    rows = {row.link_key: row.live_holder(now) for row in leases(engine)}
    return Counter(rows.get(link) for link in LINKS)


@pytest.fixture
def start_member(db_url: str) -> Iterator[Callable[[str, float], subprocess.Popen[bytes]]]:
    children: list[subprocess.Popen[bytes]] = []

    def start(name: str, lease_seconds: float) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", MEMBER, db_url, name, str(lease_seconds)], cwd=os.getcwd())
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_takeover_after_sigkill(engine: Engine, start_member: Callable[[str, float], subprocess.Popen[bytes]]) -> None:
    lease_seconds = 1.5
    members = {name: start_member(name, lease_seconds) for name in ("a", "b", "c")}
    assert wait_for(lambda: live_holders(engine) == Counter({"a": 3, "b": 3, "c": 3}), 30), live_holders(engine)
    members["b"].kill()
    killed = time.monotonic()
    assert wait_for(lambda: live_holders(engine) == Counter({"a": 5, "c": 4}), 30), live_holders(engine)
    takeover = time.monotonic() - killed
    print(f"takeover after SIGKILL: {takeover:.2f} s (lease {lease_seconds} s)")
    assert takeover < lease_seconds + 2  # expiry plus a tick or two, not some other path


def test_clean_exit_hands_over_at_once(
    engine: Engine, start_member: Callable[[str, float], subprocess.Popen[bytes]]
) -> None:
    # Leases of 60 s: had the leaving member not released its leases, nobody could take them within the wait.
    members = {name: start_member(name, 60.0) for name in ("a", "b")}
    assert wait_for(lambda: live_holders(engine) == Counter({"a": 5, "b": 4}), 30), live_holders(engine)
    members["a"].send_signal(signal.SIGTERM)
    assert members["a"].wait(timeout=10) == 0
    assert wait_for(lambda: live_holders(engine) == Counter({"b": 9}), 30), live_holders(engine)
