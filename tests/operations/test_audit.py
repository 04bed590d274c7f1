"""The audit trail: after a scripted CRM conversation it holds exactly the decisions made, in order, with reasons."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from proxy.audit import AuditLog, Decision
from proxy.database import default_url
from proxy.operations import AUDIT
from tests.operations.conftest import activity, crm_conversation, decisions
from tests.relay.conftest import wait_until
from tests.relay.test_faults import edit_on_both_sides


def test_trail_holds_exactly_the_decisions_in_order(linked):
    conversation = crm_conversation(linked)
    # Two more full passes: states seen again (the blocked slot, the Simple-calendar event) are not noted again.
    passes = linked.worker().passes
    linked.sync_now()
    wait_until(lambda: linked.worker().passes >= passes + 1, message="a pass")
    linked.sync_now()
    wait_until(lambda: linked.worker().passes >= passes + 2, message="another pass")
    assert decisions(linked) == conversation.expected
    entries = {e["decision"]: e for e in activity(linked)}
    assert entries["created"]["calendar"] == "/alice/sales/"
    assert entries["created"]["icloud_calendar"] == "work"
    assert entries["created"]["reason"] == "new appointment in the CRM"
    assert "blocked slot never leaves" in entries["skipped-blocked"]["reason"]
    assert "Simple calendar" in entries["skipped-simple"]["reason"]
    assert entries["imported"]["icloud_calendar"] == "home"
    assert entries["imported"]["calendar"] == "/alice/icloud-home/"
    assert "keeps iCloud deletions" in entries["kept-icloud-deletion"]["reason"]
    assert all(e["at"].endswith("+00:00") for e in entries.values())


def test_paging_and_uid_filter(linked):
    conversation = crm_conversation(linked)
    assert decisions(linked, uid="appt-1") == [("created", "appt-1"), ("updated", "appt-1"), ("deleted", "appt-1")]
    pages, before = [], None
    while True:
        params = {"limit": 2, **({"before": before} if before else {})}
        response = requests.get(linked.url + "api/v1/users/alice/activity", params=params,
                                auth=linked.relay.auth("crm"), timeout=10).json()
        pages.append([(e["decision"], e["uid"]) for e in response["entries"]])
        before = response["next"]
        if before is None:
            break
    assert [d for page in reversed(pages) for d in reversed(page)] == conversation.expected
    assert all(len(page) <= 2 for page in pages)


def test_people_see_only_their_own_trail(linked):
    url = linked.url + "api/v1/users/alice/activity"
    assert requests.get(url, auth=linked.relay.auth("bob"), timeout=10).status_code == 403
    assert requests.get(url, auth=linked.relay.auth("alice"), timeout=10).status_code == 200
    bad = requests.get(url, params={"limit": "lots"}, auth=linked.relay.auth("alice"), timeout=10)
    assert bad.status_code == 400 and "limit" in bad.json()["error"]["message"]


def test_retention_prunes_old_entries(tmp_path):
    now = [1_000_000.0]
    audit = AuditLog.open(default_url(tmp_path), retention_days=1, clock=lambda: now[0])
    audit.record(Decision.CREATED, "alice", "old", "new appointment in the CRM")
    now[0] += 2 * 86400
    audit.record(Decision.CREATED, "alice", "new", "new appointment in the CRM")
    audit.flush()
    assert audit.prune() == 1
    assert [e.uid for e in audit.query("alice")] == ["new"]
    audit.close()
    audit.engine.dispose()


def test_repeated_states_are_noted_once(tmp_path):
    audit = AuditLog.open(default_url(tmp_path))
    for _ in range(3):
        audit.record(Decision.WAITING, "alice", "u", "waiting: iCloud is throttling requests")
    audit.record(Decision.CREATED, "alice", "u", "new appointment in the CRM")
    audit.record(Decision.WAITING, "alice", "u", "waiting: iCloud is throttling requests")
    audit.flush()
    assert [e.decision for e in reversed(audit.query("alice"))] == [Decision.WAITING, Decision.CREATED,
                                                                    Decision.WAITING]
    audit.close()
    audit.engine.dispose()


def test_activity_command(linked):
    conversation = crm_conversation(linked)
    linked.relay.app[AUDIT].flush()
    command = [sys.executable, "-m", "proxy", "activity", "alice", "--data", str(linked.relay.data_dir)]
    out = subprocess.run([*command, "--uid", "appt-1"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert [line.split()[3] for line in out.splitlines() if not line.startswith(" " * 8)] == [
        "deleted", "updated", "created"]
    assert "new appointment in the CRM" in out
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert [(e["decision"], e["uid"]) for e in reversed(json.loads(as_json))] == conversation.expected


@pytest.mark.parametrize(("icloud_edited", "crm_edited", "expected"), [
    ("20270101T120000Z", "20270101T110000Z", "icloud"),
    ("20270101T110000Z", "20270101T120000Z", "crm"),
])
def test_conflicts_say_who_won(calrelay_factory, icloud_edited, crm_edited, expected):
    linked, _ = edit_on_both_sides(calrelay_factory, icloud_edited=icloud_edited, crm_edited=crm_edited)
    wait_until(lambda: any(e["decision"] == "conflict" for e in activity(linked, uid="both")),
               message="the conflict is noted")
    conflicts = [e for e in activity(linked, uid="both") if e["decision"] == "conflict"]
    assert [e["winner"] for e in conflicts] == [expected]
    kept = "iCloud's edit kept" if expected == "icloud" else "the CRM's edit"
    assert kept in conflicts[0]["reason"]
    assert decisions(linked, uid="both")[0] == ("created", "both")
