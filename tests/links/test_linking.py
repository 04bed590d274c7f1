"""Linking a user's iCloud account, end to end against the built-in emulator (issue 4)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from proxy.keys import EMULATOR, ENGINE
from proxy.model import MIRROR_BLOCKS_PROP, MIRROR_ROLE_PROP
from proxy.recorder import RECORDING
from tests.helpers import event, mkcalendar, put

APPLE_ID = "demo@icloud.test"
APP_PASSWORD = "abcd-efgh-ijkl-mnop"
SHARED = "Team (shared with me)"
SUBSCRIBED = "US Holidays"


def link(relay, /, user="alice", as_user=None, **body):
    """PUT a link for ``user`` (acting as ``as_user``) with the demo account's credentials and ``body``."""
    payload = {"apple_id": APPLE_ID, "app_password": APP_PASSWORD, "primary": "work", **body}
    return requests.put(
        relay.url + f"api/v1/users/{user}/link", json=payload, auth=relay.auth(as_user or user), timeout=30
    )


def test_list_calendars_shows_what_can_be_linked(calrelay):
    response = requests.post(
        calrelay.url + "api/v1/users/alice/icloud-calendars",
        json={"apple_id": APPLE_ID, "app_password": APP_PASSWORD},
        auth=calrelay.auth("alice"),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    calendars = {c["display_name"]: c for c in response.json()["calendars"]}
    assert calendars["Work"]["can_be_primary"] and calendars["Work"]["writable"]
    assert not calendars[SHARED]["writable"] and calendars[SHARED]["shared"]
    assert calendars[SHARED]["can_be_conflict"] and not calendars[SHARED]["can_be_primary"]
    assert calendars[SUBSCRIBED]["subscribed"] and not calendars[SUBSCRIBED]["can_be_conflict"]
    assert calendars["Reminders"]["components"] == ["VTODO"]
    assert APP_PASSWORD not in response.text


def test_link_creates_mirrors_and_reports_connected(calrelay):
    response = link(calrelay, conflicts=["home", SHARED])
    assert response.status_code == 200, response.text
    status = response.json()
    assert status["state"] == "connected" and status["mode"] == "two-way"
    roles = {c["name"]: (c["role"], c["mirror"], c["blocks_availability"]) for c in status["calendars"]}
    assert roles["work"] == ("primary", "/alice/icloud-work/", True)
    assert roles["home"] == ("conflict", "/alice/icloud-home/", True)
    assert len(roles) == 3
    assert APP_PASSWORD not in response.text

    listing = requests.request(
        "PROPFIND", calrelay.url + "alice/", auth=calrelay.auth("alice"), headers={"Depth": "1"}, timeout=10
    )
    assert "/alice/icloud-work/" in listing.text and "/alice/icloud-home/" in listing.text
    again = requests.get(calrelay.url + "api/v1/users/alice/status", auth=calrelay.auth("alice"), timeout=10).json()
    assert again["state"] == "connected" and [c["mirror"] for c in again["calendars"]] == [
        c["mirror"] for c in status["calendars"]
    ]


def test_conflict_mirror_is_read_only_for_clients(calrelay):
    assert link(calrelay, conflicts=["home"]).status_code == 200
    for user in ("alice", "crm"):
        refused = put(calrelay.url + "alice/icloud-home/x.ics", calrelay.auth(user), event("x", _start()))
        assert refused.status_code == 403
        assert "read only" in refused.text and "conflict calendar" in refused.text
    # the primary mirror accepts CRM edits (they flow back to iCloud, rule 11)
    assert (
        put(calrelay.url + "alice/icloud-work/y.ics", calrelay.auth("alice"), event("y", _start())).status_code == 201
    )


def test_primary_excluded_from_conflicts_does_not_block(calrelay):
    status = link(calrelay, primary_blocks=False).json()
    assert status["calendars"][0]["blocks_availability"] is False
    engine = calrelay.app[ENGINE]
    props = {c.path: c.props for c in calrelay.run(engine.call(engine.list_calendars, "alice"))}
    assert props["/alice/icloud-work/"][MIRROR_ROLE_PROP] == "primary"
    assert props["/alice/icloud-work/"][MIRROR_BLOCKS_PROP] == "false"


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"app_password": "demo-main-password"}, "credentials_rejected", "use an app-specific password"),
        ({"primary": SHARED}, "read_only_primary", "read-only in iCloud"),
        ({"primary": SUBSCRIBED}, "subscription_calendar", "subscription (webcal) calendar"),
        ({"conflicts": [SUBSCRIBED]}, "subscription_calendar", "cannot be a conflict calendar"),
        ({"primary": "Reminders"}, "not_an_event_calendar", "task list"),
        ({"primary": "holidays"}, "unknown_calendar", "it has: home (Home: events)"),
        ({"mode": "sideways"}, "invalid_mode", "two-way, one-way"),
        (
            {"server": "https://caldav.icloud.com/", "app_password": "my apple password"},
            "invalid_app_password",
            "xxxx-xxxx-xxxx-xxxx",
        ),
        ({"colour": "red"}, "unknown_field", "unknown field 'colour'"),
    ],
)
def test_link_validation_errors_are_actionable(calrelay, body, code, message):
    response = link(calrelay, **body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["code"] == code and message in error["message"], error
    assert requests.get(calrelay.url + "api/v1/users/alice/status", auth=calrelay.auth("alice"), timeout=10).json() == {
        "user": "alice",
        "linked": False,
    }


def test_simple_calendars_never_integrate(calrelay):
    alice = calrelay.auth("alice")
    assert mkcalendar(calrelay.url + "alice/intro/", alice, "Intro", kind="simple").status_code == 201
    assert mkcalendar(calrelay.url + "alice/sales/", alice, "Sales", kind="round-robin").status_code == 201
    refused = link(calrelay, calendars=["intro"])
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "simple_calendar"
    accepted = link(calrelay, calendars=["sales"])
    assert accepted.status_code == 200 and accepted.json()["booking_calendars"] == ["/alice/sales/"]


def test_users_reach_only_their_own_link(calrelay):
    assert link(calrelay, user="bob", as_user="alice").status_code == 403
    assert link(calrelay, user="bob", as_user="crm").status_code == 200
    assert (
        requests.get(calrelay.url + "api/v1/users/bob/status", auth=calrelay.auth("alice"), timeout=10).status_code
        == 403
    )


def test_unlink_removes_mirrors(calrelay):
    assert link(calrelay, conflicts=["home"]).status_code == 200
    assert (
        requests.delete(calrelay.url + "api/v1/users/alice/link", auth=calrelay.auth("alice"), timeout=10).status_code
        == 204
    )
    listing = requests.request(
        "PROPFIND", calrelay.url + "alice/", auth=calrelay.auth("alice"), headers={"Depth": "1"}, timeout=10
    )
    assert "icloud-" not in listing.text
    assert (
        requests.delete(calrelay.url + "api/v1/users/alice/link", auth=calrelay.auth("alice"), timeout=10).status_code
        == 404
    )


def test_link_survives_a_restart(calrelay_factory, tmp_path):
    data_dir = tmp_path / "kept"
    first = calrelay_factory(data_dir=data_dir)
    assert link(first, conflicts=["home"]).status_code == 200
    first.server.stop()
    second = calrelay_factory(data_dir=data_dir)
    # the emulator kept its state in the data directory, calrelay kept the link and the key
    status = requests.get(second.url + "api/v1/users/alice/status", auth=second.auth("alice"), timeout=10).json()
    assert status["linked"] and status["state"] == "connected" and len(status["calendars"]) == 2


def test_secret_is_encrypted_at_rest_and_never_leaks(calrelay_factory, tmp_path, caplog):
    har = tmp_path / "traffic.har"
    server = calrelay_factory(overrides={"recorder": {"path": str(har)}})
    caplog.set_level(logging.DEBUG)
    assert link(server, conflicts=["home"]).status_code == 200
    assert link(server, primary="Reminders").status_code == 400
    assert link(server, app_password="wxyz-wxyz-wxyz-wxyz").status_code == 400
    requests.post(server.url + "api/v1/users/alice/icloud-calendars", json={}, auth=server.auth("alice"), timeout=30)
    requests.get(server.url + "api/v1/users/alice/status", auth=server.auth("alice"), timeout=10)
    cli = subprocess.run(
        [sys.executable, "-m", "proxy", "status", "--data", str(server.data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "link",
            "alice",
            "--list",
            "--data",
            str(server.data_dir),
            "--server",
            server.app[EMULATOR].discovery_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0 and listing.returncode == 0, cli.stderr + listing.stderr
    server.run(server.app[RECORDING].stop())

    places = {
        "log": caplog.text,
        "cli status": cli.stdout + cli.stderr,
        "cli list": listing.stdout + listing.stderr,
        "har": har.read_text(),
    }
    for path in Path(server.data_dir).rglob("*"):
        if path.is_file() and "emulator" not in path.parts:  # the emulator is iCloud: it knows the password
            places[str(path)] = path.read_bytes().decode("latin-1")
    for place, text in places.items():
        assert APP_PASSWORD not in text, f"the app-specific password leaked into {place}"
        assert APP_PASSWORD.replace("-", "") not in text, place
    assert json.loads(cli.stdout)[0]["apple_id"] == APPLE_ID
    assert "work" in listing.stdout


def _start():
    return datetime(2026, 12, 1, 9, tzinfo=UTC)


def test_cli_link_validates_and_links(calrelay):
    url = calrelay.app[EMULATOR].discovery_url
    base = [
        sys.executable,
        "-m",
        "proxy",
        "link",
        "bob",
        "--data",
        str(calrelay.data_dir),
        "--server",
        url,
        "--apple-id",
        APPLE_ID,
        "--app-password-stdin",
    ]
    refused = subprocess.run(
        [*base, "--primary", SHARED], input=APP_PASSWORD + "\n", capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "read-only in iCloud" in refused.stderr
    done = subprocess.run(
        [*base, "--primary", "work", "--conflict", "home", "--wait"],
        input=APP_PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "bob: connected" in done.stdout and "/bob/icloud-home/" in done.stdout
    # --wait returned once the running server had finished the first pull of both calendars.
    assert "first sync: [" in done.stderr and "2/2 calendars" in done.stderr, done.stderr
    assert "last pull: never" not in done.stdout
    assert "attendees='description'" in done.stdout  # the default policies are shown
    private = subprocess.run(
        [*base, "--primary", "work", "--privacy-title", "Busy", "--all-day", "always-busy", "--json"],
        input=APP_PASSWORD + "\n", capture_output=True, text=True, timeout=60,
    )
    assert private.returncode == 0, private.stderr
    chosen = json.loads(private.stdout)["policies"]
    assert chosen["privacy_title"] == "Busy" and chosen["all_day"] == "always-busy"
    bad = subprocess.run(
        [*base, "--primary", "work", "--privacy-title", "{who}"],
        input=APP_PASSWORD + "\n", capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 1 and "only {title} and {calendar}" in bad.stderr
    unlinked = subprocess.run(
        [sys.executable, "-m", "proxy", "unlink", "bob", "--data", str(calrelay.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unlinked.returncode == 0 and "unlinked bob" in unlinked.stdout
