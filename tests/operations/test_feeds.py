"""Subscription feeds: served without a password, stop once revoked, never another user's calendar."""

from __future__ import annotations

import subprocess
import sys

import icalendar
import requests

from tests.conftest import running_calrelay
from tests.helpers import event, mkcalendar, put
from tests.operations.conftest import START


def make_feed(server, user: str, calendar: str, auth_user: str | None = None) -> requests.Response:
    return requests.post(server.url + f"api/v1/users/{user}/feeds", json={"calendar": calendar},
                         auth=server.auth(auth_user or user), timeout=10)


def test_feed_serves_the_calendar_until_revoked(calrelay):
    crm = calrelay.auth("crm")
    assert mkcalendar(calrelay.url + "alice/sales/", crm, "Sales", kind="round-robin").status_code == 201
    assert mkcalendar(calrelay.url + "bob/sales/", crm, "Bob's", kind="round-robin").status_code == 201
    assert put(calrelay.url + "alice/sales/a1.ics", crm, event("a1", START, summary="Alice's call")).status_code == 201
    assert put(calrelay.url + "alice/sales/a2.ics", crm, event("a2", START, summary="Second")).status_code == 201
    assert put(calrelay.url + "bob/sales/b1.ics", crm, event("b1", START, summary="Bob's call")).status_code == 201

    created = make_feed(calrelay, "alice", "sales")
    assert created.status_code == 201, created.text
    url = created.json()["url"]
    assert url.startswith(calrelay.url + "feeds/") and url.endswith(".ics")

    served = requests.get(url, timeout=10)  # no credentials at all
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("text/calendar")
    calendar = icalendar.Calendar.from_ical(served.content)
    assert sorted(str(e["UID"]) for e in calendar.walk("VEVENT")) == ["a1", "a2"]
    assert calendar["X-WR-CALNAME"] == "Sales"

    listed = requests.get(calrelay.url + "api/v1/users/alice/feeds", auth=calrelay.auth("alice"), timeout=10).json()
    assert [f["id"] for f in listed["feeds"]] == [created.json()["id"]]
    assert "url" not in listed["feeds"][0] and "token" not in str(listed)

    # Bob may not revoke alice's feed, nor make one of her calendar.
    assert requests.delete(calrelay.url + f"api/v1/users/alice/feeds/{created.json()['id']}",
                           auth=calrelay.auth("bob"), timeout=10).status_code == 403
    assert make_feed(calrelay, "alice", "sales", auth_user="bob").status_code == 403
    assert make_feed(calrelay, "bob", "alice/sales").status_code == 403
    assert make_feed(calrelay, "alice", "nonexistent").status_code == 404

    revoked = requests.delete(calrelay.url + f"api/v1/users/alice/feeds/{created.json()['id']}",
                              auth=calrelay.auth("alice"), timeout=10)
    assert revoked.status_code == 204
    assert requests.get(url, timeout=10).status_code == 410
    assert requests.get(calrelay.url + "feeds/not-a-real-token.ics", timeout=10).status_code == 404
    # Only feed URLs are open: nothing else below /feeds/ answers, and nothing reaches the CalDAV engine.
    assert requests.request("PROPFIND", calrelay.url + "feeds/", timeout=10).status_code == 404
    assert requests.get(calrelay.url + "feeds/../alice/sales/", timeout=10).status_code in (400, 401, 404)


def test_feeds_command(calrelay):
    crm = calrelay.auth("crm")
    assert mkcalendar(calrelay.url + "bob/intro/", crm, "Intro", kind="simple").status_code == 201
    assert put(calrelay.url + "bob/intro/i1.ics", crm, event("i1", START)).status_code == 201
    command = [sys.executable, "-m", "proxy", "feeds", "bob", "--data", str(calrelay.data_dir)]
    created = subprocess.run([*command, "--create", "intro"], capture_output=True, text=True, timeout=60, check=True)
    path = created.stdout.strip().splitlines()[-1].split(":5232", 1)[1]
    feed_id = created.stdout.split()[1]
    served = requests.get(calrelay.url.rstrip("/") + path, timeout=10)
    assert served.status_code == 200 and b"UID:i1" in served.content
    listed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    assert f"{feed_id}  /bob/intro/  active" in listed
    subprocess.run([*command, "--revoke", feed_id], capture_output=True, text=True, timeout=60, check=True)
    assert requests.get(calrelay.url.rstrip("/") + path, timeout=10).status_code == 410
    missing = subprocess.run([*command, "--create", "nothing"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no calendar /bob/nothing/" in missing.stderr


def test_feed_url_behind_a_local_tls_proxy(calrelay):
    assert mkcalendar(calrelay.url + "alice/sales/", calrelay.auth("crm"), "Sales").status_code == 201
    response = requests.post(calrelay.url + "api/v1/users/alice/feeds", json={"calendar": "sales"},
                             auth=calrelay.auth("alice"), timeout=10,
                             headers={"X-Forwarded-Proto": "https", "Host": "calendar.example.com"})
    assert response.json()["url"].startswith("https://calendar.example.com/feeds/")


def test_feed_tokens_never_reach_a_recording(tmp_path):
    har = tmp_path / "session.har"
    with running_calrelay(tmp_path / "data", overrides={"recorder": {"path": str(har)}}) as server:
        assert mkcalendar(server.url + "alice/sales/", server.auth("crm"), "Sales").status_code == 201
        url = make_feed(server, "alice", "sales").json()["url"]
        assert requests.get(url, timeout=10).status_code == 200
    token = url.rsplit("/", 1)[1].removesuffix(".ics")
    recorded = har.read_text()
    assert "/feeds/" in recorded and token not in recorded
