"""The relay with a standard CalDAV server (a plain Radicale) as the upstream: nothing assumes iCloud."""

from __future__ import annotations

from datetime import UTC, datetime

import caldav
import requests

from tests.helpers import event, mkcalendar, plain_radicale, put
from tests.relay.conftest import wait_until

START = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
OWNER = ("owner@example.com", "any-password")  # Radicale with auth = none accepts any password


def test_push_and_pull_with_radicale_upstream(calrelay_factory, tmp_path):
    with plain_radicale(tmp_path / "upstream") as upstream:
        principal = caldav.DAVClient(url=upstream, username=OWNER[0], password=OWNER[1]).principal()
        work = principal.make_calendar(name="Work", cal_id="work")
        relay = calrelay_factory(overrides={"upstream": {"poll_interval": 1.0}})
        crm = relay.auth("crm")
        assert mkcalendar(relay.url + "alice/sales/", crm, "Sales", kind="service").status_code == 201
        response = requests.put(relay.url + "api/v1/users/alice/link", auth=crm, timeout=30, json={
            "apple_id": OWNER[0], "app_password": OWNER[1], "server": upstream, "primary": "work"})
        assert response.status_code == 200, response.text

        assert put(relay.url + "alice/sales/std.ics", crm, event("std", START, summary="Standard")).status_code == 201
        wait_until(lambda: any(e.icalendar_component["UID"] == "std" for e in work.events()),
                   message="pushed to Radicale")
        work.save_event(event("born-there", START, summary="Made upstream"))
        mirror_url = relay.url + "alice/icloud-work/"
        wait_until(lambda: "born-there" in requests.get(mirror_url, auth=crm, timeout=10).text,
                   message="pulled from Radicale")
        mirror = requests.get(mirror_url, auth=crm, timeout=10).text
        assert "X-CALRELAY-KIND:BLOCKED" in mirror and "UID:std" not in mirror

        assert requests.delete(relay.url + "alice/sales/std.ics", auth=crm, timeout=10).ok
        wait_until(lambda: all(e.icalendar_component["UID"] != "std" for e in work.events()),
                   message="deleted from Radicale")
