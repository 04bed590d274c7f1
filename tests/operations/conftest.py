"""Fixtures for the operations features: the relay's linked calrelay, and a scripted CRM conversation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.helpers import event, put
from tests.relay.conftest import Linked, make_linked, wait_until
from tests.relay.test_pull import icloud_delete, icloud_put

START = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
def linked(calrelay_factory) -> Linked:
    return make_linked(calrelay_factory(overrides={"upstream": {"poll_interval": 1.0, "min_backoff": 0.2,
                                                                "max_backoff": 2.0}}))


def activity(linked: Linked, user: str = "alice", auth: tuple[str, str] | None = None, **params: Any) -> list[dict]:
    response = requests.get(linked.url + f"api/v1/users/{user}/activity", params=params,
                            auth=auth or linked.relay.auth("crm"), timeout=10)
    response.raise_for_status()
    return response.json()["entries"]


def decisions(linked: Linked, **params: Any) -> list[tuple[str, str]]:
    """(decision, uid) oldest first."""
    return [(e["decision"], e["uid"]) for e in reversed(activity(linked, limit=500, **params))]


@dataclass(frozen=True)
class Conversation:
    """What the scripted conversation did, step by step: the decisions it must have caused, in order."""

    expected: list[tuple[str, str]]
    puts: int  # CalDAV PUTs sent by the CRM
    deletes: int


def crm_conversation(linked: Linked) -> Conversation:
    """A CRM books, edits and cancels an appointment, writes a blocked slot and a Simple-calendar event; the
    person adds an event in iCloud and deletes it there. Each step waits for the relay's decision."""
    crm = linked.relay.auth("crm")
    expected: list[tuple[str, str]] = []

    def step(decision: str, uid: str) -> None:
        expected.append((decision, uid))
        wait_until(lambda: decisions(linked)[: len(expected)] == expected, timeout=30,
                   message=f"{decision} of {uid}; trail so far: {decisions(linked)}")

    url = linked.url + "alice/sales/appt-1.ics"
    assert put(url, crm, event("appt-1", START, summary="Demo call")).status_code == 201
    step("created", "appt-1")
    assert put(url, crm, event("appt-1", START + timedelta(hours=1), summary="Moved")).status_code == 204
    step("updated", "appt-1")
    assert put(linked.url + "alice/sales/block.ics", crm, event("block", START, kind="BLOCKED")).status_code == 201
    step("skipped-blocked", "block")
    assert put(linked.url + "alice/intro/simple.ics", crm, event("simple", START)).status_code == 201
    step("skipped-simple", "simple")
    icloud_put(linked, "home", "dentist.ics", event("dentist", START + timedelta(days=1), summary="Dentist"))
    linked.sync_now()
    step("imported", "dentist")
    icloud_delete(linked, "home", "dentist.ics")
    linked.sync_now()
    step("kept-icloud-deletion", "dentist")
    assert requests.delete(url, auth=crm, timeout=10).status_code in (200, 204)
    step("deleted", "appt-1")
    return Conversation(expected, puts=4, deletes=1)
