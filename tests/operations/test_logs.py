"""Logs for people: one plain-words line per relay pass, throttling as one warning, JSON lines on request."""

from __future__ import annotations

import json
import logging

from proxy.logs import JsonFormatter, pass_summary
from tests.helpers import event, put
from tests.operations.conftest import START
from tests.relay.conftest import wait_until


def test_pass_summary_in_plain_words():
    before = {"pushed": 2, "imported": 0, "kept": 0, "deleted": 0}
    after = {"pushed": 5, "imported": 12, "kept": 1, "deleted": 0}
    assert pass_summary(before, after) == "pushed 3, imported 12, kept 1 iCloud deletion"
    assert pass_summary(after, after) == ""
    assert pass_summary({}, {"kept": 2, "applied": 1}) == "applied 1 iCloud edit, kept 2 iCloud deletions"
    assert pass_summary({}, {"imported": 4, "not_imported": 1}) == (
        "imported 4, could not import 1 iCloud event (see calrelay activity)")


def test_json_lines():
    record = logging.LogRecord("proxy.relay", logging.WARNING, __file__, 1, "paused %d s", (3,), None)
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "WARNING" and line["logger"] == "proxy.relay" and line["message"] == "paused 3 s"
    assert line["time"].endswith("+00:00")


def test_one_line_per_pass_and_throttling_as_one_warning(linked, caplog):
    caplog.set_level(logging.INFO)
    crm = linked.relay.auth("crm")
    for n in range(3):
        assert put(linked.url + f"alice/sales/p{n}.ics", crm, event(f"p{n}", START)).status_code == 201
    wait_until(lambda: {"p0", "p1", "p2"} <= set(linked.icloud_store()), message="pushed")

    def pushed_in_logs() -> int:
        passes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("relay pass for alice")]
        return sum(int(m.split("pushed ")[1].split(",")[0]) for m in passes if "pushed" in m)

    # A pass logs its line once it is over, a moment after its last write reached iCloud.
    wait_until(lambda: pushed_in_logs() >= 3, message="the passes' lines")
    assert pushed_in_logs() == 3

    caplog.clear()
    linked.emulator.set_faults(throttle_seconds=30, retry_after=30)
    try:
        assert put(linked.url + "alice/sales/p9.ics", crm, event("p9", START)).status_code == 201
        wait_until(lambda: linked.worker().backing_off, message="backing off")
    finally:
        linked.emulator.set_faults(throttle_seconds=0)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "paused" in warnings[0].getMessage() and "throttled" in warnings[0].getMessage()
    assert warnings[0].exc_info is None
