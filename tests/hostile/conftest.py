"""Fixtures of the hostile-input suite: one calrelay per module, and helpers that send exactly what is given."""

from __future__ import annotations

import base64
import http.client
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.conftest import Calrelay, running_calrelay
from tests.frontdoor.test_bad_input import snapshot
from tests.helpers import event, mkcalendar, put

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def send(server: Calrelay, method: str, path: str, body: bytes = b"", user: str = "alice",
         headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, str]:
    """Send exactly ``path`` and ``body`` as ``user``; (status, text)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server.port, timeout=timeout)
    token = base64.b64encode(f"{user}:{server.password(user)}".encode()).decode()
    connection.request(method, path, body=body, headers={"Authorization": f"Basic {token}", **(headers or {})})
    response = connection.getresponse()
    result = response.status, response.read().decode("utf-8", "replace")
    connection.close()
    return result


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Calrelay]:
    """calrelay with alice's and bob's booking calendars, one event each."""
    with running_calrelay(tmp_path_factory.mktemp("hostile") / "data") as server:
        for user in ("alice", "bob"):
            auth = server.auth(user)
            assert mkcalendar(f"{server.url}{user}/sales/", auth, "Sales", kind="round-robin").status_code == 201
            assert put(f"{server.url}{user}/sales/a.ics", auth, event(f"{user}-a", START)).status_code == 201
        yield server


def stored(server: Calrelay) -> dict[str, object]:
    """The stored calendars: the storage's tables (not the relay's state, which background work may touch)."""
    return {name: rows for name, rows in snapshot(server).items() if name.startswith("table dav_")}
