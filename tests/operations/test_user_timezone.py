"""Each user's own time zone: set by the API and the CLI (validated), used by the status page, availability
queries and feeds, with ``?tz=`` overriding it for one request."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import icalendar
import pytest
import requests

from proxy.audit import AuditLog, Decision
from proxy.database import default_url
from proxy.user_settings import UserSettings, parse_zone
from tests.helpers import event, mkcalendar, put


def settings_of(server, user: str, auth_user: str | None = None) -> requests.Response:
    return requests.get(server.url + f"api/v1/users/{user}/settings", auth=server.auth(auth_user or user),
                        timeout=10)


def set_zone(server, user: str, zone: object, auth_user: str | None = None) -> requests.Response:
    return requests.put(server.url + f"api/v1/users/{user}/settings", json={"timezone": zone},
                        auth=server.auth(auth_user or user), timeout=10)


def page_zone(server, user: str, viewer: str | None = None, **params: str) -> str:
    page = requests.get(server.url + f"status/{user}" if user else server.url + "status", params=params,
                        auth=server.auth(viewer or user), timeout=10)
    assert page.status_code == 200, page.text
    return page.text.split("times in ", 1)[1].split("<", 1)[0].strip()


def test_the_api_sets_checks_and_clears_a_users_zone(calrelay):
    assert settings_of(calrelay, "alice").json() == {"user": "alice", "timezone": None, "effective_timezone": "UTC"}
    changed = set_zone(calrelay, "alice", "Europe/Berlin")
    assert changed.status_code == 200
    assert changed.json() == {"user": "alice", "timezone": "Europe/Berlin", "effective_timezone": "Europe/Berlin"}
    assert settings_of(calrelay, "alice", "crm").json()["timezone"] == "Europe/Berlin"

    bad = set_zone(calrelay, "alice", "Mars/Olympus")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_timezone"
    assert "unknown time zone 'Mars/Olympus'" in bad.json()["error"]["message"]
    assert "Europe/Berlin" in bad.json()["error"]["message"]  # says what to give instead
    for wrong in (42, "", "../../etc/passwd", "x" * 500):
        assert set_zone(calrelay, "alice", wrong).status_code == 400, wrong
    malformed = requests.put(calrelay.url + "api/v1/users/alice/settings", data=b"{", auth=calrelay.auth("alice"),
                             timeout=10)
    assert malformed.status_code == 400
    unknown_field = requests.put(calrelay.url + "api/v1/users/alice/settings", json={"tz": "UTC"},
                                 auth=calrelay.auth("alice"), timeout=10)
    assert unknown_field.status_code == 400 and "timezone" in unknown_field.json()["error"]["message"]
    assert settings_of(calrelay, "alice").json()["timezone"] == "Europe/Berlin"  # refused changes changed nothing

    assert set_zone(calrelay, "alice", "Asia/Tokyo", auth_user="bob").status_code == 403
    assert settings_of(calrelay, "alice", "bob").status_code == 403
    assert set_zone(calrelay, "nobody", "UTC", auth_user="crm").status_code == 404
    assert set_zone(calrelay, "alice", None).json()["timezone"] is None
    assert settings_of(calrelay, "alice").json()["effective_timezone"] == "UTC"


def test_the_command_sets_the_zone_the_running_server_uses(calrelay):
    command = [sys.executable, "-m", "proxy", "timezone", "--data", str(calrelay.data_dir)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)

    assert run("alice").stdout.strip() == "alice: UTC ([availability] timezone; none of their own)"
    assert run("alice", "Asia/Tokyo").stdout.strip() == "alice: Asia/Tokyo"
    assert page_zone(calrelay, "alice") == "Asia/Tokyo"  # the server reads it: no restart
    assert settings_of(calrelay, "alice").json()["timezone"] == "Asia/Tokyo"

    bad = run("alice", "Asia/Atlantis")
    assert bad.returncode == 2 and "unknown time zone 'Asia/Atlantis'" in bad.stderr and "Europe/Berlin" in bad.stderr
    nobody = run("nobody", "UTC")
    assert nobody.returncode == 1 and "no calrelay user 'nobody'" in nobody.stderr
    assert run("alice").stdout.strip() == "alice: Asia/Tokyo"
    assert run("alice", "--clear").returncode == 0
    assert page_zone(calrelay, "alice") == "UTC"


def test_the_status_page_shows_the_users_zone_and_tz_overrides_it(calrelay_factory):
    server = calrelay_factory(overrides={"availability": {"timezone": "America/New_York"}})
    assert page_zone(server, "alice") == "America/New_York"
    assert set_zone(server, "alice", "Europe/Berlin").status_code == 200
    assert page_zone(server, "alice") == "Europe/Berlin"
    assert page_zone(server, "alice", viewer="crm") == "Europe/Berlin"  # alice's page, in alice's zone
    assert page_zone(server, "alice", tz="Asia/Tokyo") == "Asia/Tokyo"
    assert page_zone(server, "alice", tz="Mars/Olympus") == "Europe/Berlin"  # an old bookmark does not break it
    assert page_zone(server, "", viewer="crm") == "America/New_York"  # the overview: the viewer's own zone
    assert set_zone(server, "crm", "Australia/Sydney").status_code == 200
    assert page_zone(server, "", viewer="crm") == "Australia/Sydney"


def availability(server, **params: str) -> requests.Response:
    return requests.get(server.url + "api/v1/users/alice/availability", params=params,
                        auth=server.auth("alice"), timeout=10)


def test_availability_reads_times_without_an_offset_in_the_users_zone(calrelay):
    crm = calrelay.auth("crm")
    assert mkcalendar(calrelay.url + "alice/sales/", crm, "Sales", kind="round-robin").status_code == 201
    # 09:00-09:30 in Berlin (CEST, UTC+2) is 07:00-07:30 UTC.
    booked = event("berlin-morning", datetime(2027, 4, 5, 7, 0, tzinfo=UTC))
    assert put(calrelay.url + "alice/sales/b.ics", crm, booked).status_code == 201
    window = {"start": "2027-04-05T09:00", "end": "2027-04-05T10:00"}
    in_utc = availability(calrelay, **window).json()
    assert in_utc["timezone"] == "UTC" and in_utc["start"] == "2027-04-05T09:00:00Z" and in_utc["busy"] == []

    assert set_zone(calrelay, "alice", "Europe/Berlin").status_code == 200
    in_berlin = availability(calrelay, **window).json()
    assert in_berlin["timezone"] == "Europe/Berlin" and in_berlin["start"] == "2027-04-05T07:00:00Z"
    assert [b["start"] for b in in_berlin["busy"]] == ["2027-04-05T07:00:00Z"]

    overridden = availability(calrelay, tz="UTC", **window).json()
    assert overridden["timezone"] == "UTC" and overridden["busy"] == []
    bad = availability(calrelay, tz="Mars/Olympus", **window)
    assert bad.status_code == 400 and "unknown time zone 'Mars/Olympus'" in bad.json()["error"]["message"]
    reasons = requests.get(calrelay.url + "api/v1/users/alice/busy-reasons", params={"at": "2027-04-05T09:15"},
                           auth=calrelay.auth("alice"), timeout=10).json()
    assert reasons["at"] == "2027-04-05T07:15:00Z" and reasons["busy"] is True


def test_a_feed_carries_the_owners_zone(calrelay):
    crm = calrelay.auth("crm")
    assert mkcalendar(calrelay.url + "alice/sales/", crm, "Sales", kind="round-robin").status_code == 201
    created = requests.post(calrelay.url + "api/v1/users/alice/feeds", json={"calendar": "sales"},
                            auth=calrelay.auth("alice"), timeout=10)
    url = created.json()["url"]
    assert icalendar.Calendar.from_ical(requests.get(url, timeout=10).content)["X-WR-TIMEZONE"] == "UTC"
    assert set_zone(calrelay, "alice", "Europe/Lisbon").status_code == 200
    assert icalendar.Calendar.from_ical(requests.get(url, timeout=10).content)["X-WR-TIMEZONE"] == "Europe/Lisbon"


@pytest.mark.parametrize("name", ["Europe/Berlin", "UTC", "America/Argentina/Buenos_Aires", " Asia/Tokyo "])
def test_known_zones_are_accepted(name):
    assert parse_zone(name) == name.strip()


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "Europe/berlin", "/etc/localtime", "..", None, 3, "A" * 65])
def test_anything_else_is_refused_with_what_to_give(name):
    with pytest.raises(ValueError, match="Europe/Berlin"):
        parse_zone(name)


def test_the_activity_command_prints_times_in_the_users_zone(tmp_path):
    at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC).timestamp()
    audit = AuditLog.open(default_url(tmp_path), clock=lambda: at)
    audit.record(Decision.CREATED, "alice", "appt", "new appointment in the CRM")
    audit.flush()
    UserSettings(audit.engine).set_timezone("alice", "Asia/Tokyo")
    audit.close()
    audit.engine.dispose()
    out = subprocess.run([sys.executable, "-m", "proxy", "activity", "alice", "--data", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "2026-12-03 18:00:00  created" in out  # 09:00 UTC is 18:00 in Tokyo
