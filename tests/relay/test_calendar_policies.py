"""Availability policies per linked iCloud calendar (the link's are the default), end to end: set at link time
and changed later without the password (API and CLI), checked with clear errors, honoured by availability and
named by busy-reasons; a change rewrites the mirrors already there."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from proxy.links.cli import _calendar_policies
from proxy.links.rules import LinkError
from proxy.relay import policies, transforms
from tests.relay.conftest import APP_PASSWORD, APPLE_ID, Linked, make_linked, wait_until
from tests.relay.test_availability_policies import _calendar
from tests.relay.test_pull import icloud_put, mirror, pulled

OVERRIDES = {"upstream": {"poll_interval": 1.0, "min_backoff": 0.2, "max_backoff": 2.0}}
WINDOW = {"start": "2027-04-05T00:00:00Z", "end": "2027-04-08T00:00:00Z"}
# The same two events in each calendar: an all-day event Apple created FREE, and an invitation not answered.
HOME = {
    "home-holiday": "DTSTART;VALUE=DATE:20270406\r\nDTEND;VALUE=DATE:20270407\r\nTRANSP:TRANSPARENT\r\n",
    "home-invite": "DTSTART:20270405T170000Z\r\nDTEND:20270405T180000Z\r\nORGANIZER:mailto:boss@work.test\r\n"
    "ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:demo@icloud.test\r\n",
}
WORK = {
    "work-holiday": "DTSTART;VALUE=DATE:20270407\r\nDTEND;VALUE=DATE:20270408\r\nTRANSP:TRANSPARENT\r\n",
    "work-invite": "DTSTART:20270405T090000Z\r\nDTEND:20270405T100000Z\r\nORGANIZER:mailto:boss@work.test\r\n"
    "ATTENDEE;PARTSTAT=TENTATIVE:mailto:demo@icloud.test\r\n",
}


def _busy(linked: Linked) -> list[tuple[str, str]]:
    answer = requests.get(linked.url + "api/v1/users/alice/availability", params=WINDOW,
                          auth=linked.relay.auth("crm"), timeout=10)
    assert answer.status_code == 200, answer.text
    return [(b["start"], b["end"]) for b in answer.json()["busy"]]


def _reasons(linked: Linked, at: str) -> list[tuple[str, str | None, str]]:
    found = requests.get(linked.url + "api/v1/users/alice/busy-reasons", params={"at": at},
                         auth=linked.relay.auth("crm"), timeout=10).json()
    return [(r["calendar"], r["policy"], r["disposition"]) for r in found["reasons"]]


def _patch(linked: Linked, body: object) -> requests.Response:
    return requests.patch(linked.url + "api/v1/users/alice/policies", json=body, auth=linked.relay.auth("crm"),
                          timeout=30)


def _mirrored(linked: Linked) -> None:
    for uid, lines in HOME.items():
        icloud_put(linked, "home", f"{uid}.ics", _calendar(uid, lines))
    for uid, lines in WORK.items():
        icloud_put(linked, "work", f"{uid}.ics", _calendar(uid, lines))
    pulled(linked, lambda: len(mirror(linked, "icloud-home")) == 2 and len(mirror(linked, "icloud-work")) == 2,
           "the four events mirrored")


@pytest.fixture
def linked(calrelay_factory) -> Linked:
    return make_linked(calrelay_factory(overrides=OVERRIDES),
                       calendar_policies={"home": {"all_day": "always-busy", "unanswered": "free"}})


def test_each_calendar_blocks_by_its_own_policies(linked):
    _mirrored(linked)
    # home: all-day busy, unanswered free (its own); work: the link's defaults (all-day as marked, invitations
    # busy, "maybe" busy).
    assert _busy(linked) == [("2027-04-05T09:00:00Z", "2027-04-05T10:00:00Z"),
                             ("2027-04-06T00:00:00Z", "2027-04-07T00:00:00Z")]
    assert _reasons(linked, "2027-04-06T12:00:00Z") == [("/alice/icloud-home/", "all-day=always-busy", "busy")]
    assert _reasons(linked, "2027-04-05T17:30:00Z") == [("/alice/icloud-home/", "unanswered=free", "free")]
    assert _reasons(linked, "2027-04-05T09:30:00Z") == [("/alice/icloud-work/", "tentative=busy", "busy")]
    status = linked.status()
    home = next(c for c in status["calendars"] if c["name"] == "home")
    work = next(c for c in status["calendars"] if c["name"] == "work")
    assert home["own_policies"] == {"all_day": "always-busy", "unanswered": "free"}
    assert home["policies"] == {"all_day": "always-busy", "travel_time_busy": True, "unanswered": "free",
                                "tentative": "busy"}
    assert work["own_policies"] == {} and work["policies"]["all_day"] == "as-marked"
    answer = requests.get(linked.url + "api/v1/users/alice/availability", params=WINDOW,
                          auth=linked.relay.auth("crm"), timeout=10).json()
    sources = {s["calendar"]: s for s in answer["sources"]}
    assert sources["/alice/icloud-home/"]["policies"]["all_day"] == "always-busy"  # named with the answer
    assert sources["/alice/icloud-work/"]["policies"]["all_day"] == "as-marked"


def test_changing_a_calendars_policies_rewrites_its_mirror_without_an_icloud_change(linked):
    _mirrored(linked)
    worker = linked.worker()
    fetched, imported = worker.stats["fetched"], worker.stats["imported"]
    # No password: the link stays; home's all-day events no longer block, work's "maybe" answers neither.
    response = _patch(linked, {"calendars": {"home": {"all_day": "never-busy"}, "work": {"tentative": "free"}}})
    assert response.status_code == 200, response.text
    assert response.json()["calendars"]["home"]["own_policies"] == {"all_day": "never-busy", "unanswered": "free"}
    wait_until(lambda: _busy(linked) == [], timeout=30, message="the mirrors rewritten under the new policies")
    assert _reasons(linked, "2027-04-06T12:00:00Z") == [("/alice/icloud-home/", "all-day=never-busy", "free")]
    assert _reasons(linked, "2027-04-05T09:30:00Z") == [("/alice/icloud-work/", "tentative=free", "free")]
    wait_until(lambda: all(c["token_state"] == "valid" for c in linked.status()["calendars"]), timeout=30,
               message="the re-mirror done")
    new = linked.worker()
    assert new is not worker  # the link changed: the relay restarted it
    # Nothing imported twice: the four events were read again and rewritten where they were.
    assert new.stats["imported"] == 0 and new.stats["refreshed"] == 4 and new.stats["fetched"] == 4
    assert (fetched, imported) == (4, 4)
    assert len(mirror(linked, "icloud-home")) == 2 and len(mirror(linked, "icloud-work")) == 2

    # null puts them back: home takes the link's policies again.
    response = _patch(linked, {"calendars": {"home": None}})
    assert response.status_code == 200 and response.json()["calendars"]["home"]["own_policies"] == {}
    wait_until(lambda: ("2027-04-05T17:00:00Z", "2027-04-05T18:00:00Z") in _busy(linked), timeout=30,
               message="home's invitation blocks again (the link's default)")


def test_a_link_policy_change_reaches_the_calendars_that_do_not_set_it(linked):
    _mirrored(linked)
    assert _patch(linked, {"all_day": "always-busy"}).status_code == 200
    # work takes the link's new all-day policy; home keeps its own (always-busy too) and its unanswered=free.
    wait_until(lambda: ("2027-04-06T00:00:00Z", "2027-04-08T00:00:00Z") in _busy(linked), timeout=30,
               message="work's all-day event blocks (next to home's)")
    assert linked.status()["policies"]["all_day"] == "always-busy"
    # Unchanged policies change nothing: no restart, no re-mirror.
    worker = linked.worker()
    assert _patch(linked, {"all_day": "always-busy"}).status_code == 200
    assert linked.worker() is worker
    assert all(c["token_state"] != "remirror" for c in linked.status()["calendars"])


@pytest.mark.parametrize(("body", "words"), [
    ({"calendars": {"family": {"all_day": "always-busy"}}}, "'family', which this link does not include"),
    ({"calendars": {"home": {"attendees": "description"}}}, "attendees is the link's"),
    ({"calendars": {"home": {"privacy_title": "Busy"}}}, "privacy_title is the link's"),
    ({"calendars": {"home": {"all_day": "sometimes"}}}, "all_day must be one of as-marked, always-busy"),
    ({"calendars": {"home": {"travel_time_busy": "yes"}}}, "travel_time_busy must be true or false"),
    ({"calendars": {"home": {"colour": "red"}}}, "unknown policy 'colour' for calendar 'home'"),
    ({"calendars": {"home": "busy"}}, "the policies of calendar 'home' must be an object"),
    ({"calendars": ["home"]}, "calendars must be an object"),
    ({"all_day": "sometimes"}, "all_day must be one of"),
    ({"bogus": 1}, "unknown policy 'bogus'"),
    (["all_day"], "must be a JSON object"),
])
def test_bad_calendar_policies_are_refused_with_the_fix(linked, body, words):
    before = linked.status()
    response = _patch(linked, body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["message"]
    assert response.json()["error"]["code"] in ("invalid_policy", "invalid_json")
    after = linked.status()
    assert (after["policies"], after["calendars"]) == (before["policies"], before["calendars"])  # nothing changed


def test_link_time_calendar_policies_are_checked_too(linked):
    body = {"apple_id": APPLE_ID, "app_password": APP_PASSWORD, "primary": "work", "conflicts": ["home"],
            "calendar_policies": {"Team": {"all_day": "always-busy"}}}
    response = requests.put(linked.url + "api/v1/users/alice/link", json=body, auth=linked.relay.auth("crm"),
                            timeout=30)
    assert response.status_code == 400 and "which this link does not include; its calendars: work, home" in \
        response.json()["error"]["message"]
    assert requests.patch(linked.url + "api/v1/users/bob/policies", json={}, auth=linked.relay.auth("crm"),
                          timeout=10).status_code == 404
    # A user may not change another user's policies.
    assert requests.patch(linked.url + "api/v1/users/alice/policies", json={}, auth=linked.relay.auth("bob"),
                          timeout=10).status_code == 403


def test_cli_sets_a_calendars_policies(linked):
    base = [sys.executable, "-m", "proxy", "policy", "alice", "--data", str(linked.relay.data_dir)]
    done = subprocess.run([*base, "--calendar", "work", "--all-day", "always-busy"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "work: all_day='always-busy' (own)" in done.stdout and "home: all_day='always-busy' (own)" in done.stdout
    refused = subprocess.run([*base, "--calendar", "work", "--attendees", "description"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 1 and "attendees is the link's" in refused.stderr
    inherit = subprocess.run([*base, "--calendar", "home", "--inherit", "--json"], capture_output=True, text=True,
                             timeout=60)
    assert inherit.returncode == 0, inherit.stderr
    shown = json.loads(inherit.stdout)
    assert shown["calendars"]["home"]["own_policies"] == {} and shown["calendars"]["work"]["own_policies"] == {
        "all_day": "always-busy"}


# -- pure ----------------------------------------------------------------------------------------------------


def test_policy_set_round_trips_and_fills_in_the_link():
    chosen = policies.PolicySet(policies.LinkPolicies(unanswered=policies.UnansweredMode.FREE),
                                {"home": {"all_day": "always-busy"}})
    again = policies.policy_set(chosen.as_json())
    assert again == chosen
    assert again.for_calendar("home").all_day is policies.AllDayMode.ALWAYS_BUSY
    assert again.for_calendar("home").unanswered is policies.UnansweredMode.FREE  # the link's
    assert again.for_calendar("work") == chosen.link
    assert policies.from_json(chosen.as_json()) == chosen.link


def test_tentative_answers_block_or_not_as_the_policy_says():
    text = _calendar("maybe", "DTSTART:20270405T090000Z\r\nDTEND:20270405T100000Z\r\n"
                              "ORGANIZER:mailto:boss@work.test\r\nATTENDEE;PARTSTAT=TENTATIVE:mailto:me@icloud.com\r\n")
    busy = transforms.to_mirror(text, ["me@icloud.com"], policies.LinkPolicies())
    free = transforms.to_mirror(text, ["me@icloud.com"],
                                policies.LinkPolicies(tentative=policies.UnansweredMode.FREE))
    assert "X-CALRELAY-POLICY:tentative=busy" in busy and "TRANSP:TRANSPARENT" not in busy
    assert "X-CALRELAY-POLICY:tentative=free" in free and "TRANSP:TRANSPARENT" in free
    # Someone else's "maybe" is not the account's answer.
    other = transforms.to_mirror(text, ["someone@icloud.com"], policies.LinkPolicies())
    assert "X-CALRELAY-POLICY" not in other


_VALUES = {"all_day": st.sampled_from(["as-marked", "always-busy", "never-busy"]), "travel_time_busy": st.booleans(),
           "unanswered": st.sampled_from(["busy", "free"]), "tentative": st.sampled_from(["busy", "free"])}
_OWN = st.fixed_dictionaries({}, optional=_VALUES)


@given(link=_OWN, home=_OWN, work=_OWN)
def test_a_calendar_takes_its_own_policies_and_the_links_for_the_rest(link, home, work):
    chosen = policies.PolicySet(policies.parse(link), {name: own for name, own in (("home", home), ("work", work))
                                                       if own})
    again = policies.policy_set(chosen.as_json())
    assert again == chosen
    for name, own in (("home", home), ("work", work)):
        effective = policies.availability(again.for_calendar(name))
        assert effective == {**policies.availability(again.link), **own}
        assert again.for_calendar(name).attendees is again.link.attendees  # never a calendar's own


def test_cli_calendar_policy_options_parse_or_say_how_to_write_them():
    assert _calendar_policies(["home:all-day=always-busy", "home:travel_time_busy=no", "work:tentative=free"]) == {
        "home": {"all_day": "always-busy", "travel_time_busy": False}, "work": {"tentative": "free"}}
    for bad, words in (("home", "write NAME:POLICY=VALUE"), ("all_day=always-busy", "write NAME:POLICY=VALUE"),
                       ("home:travel_time_busy=maybe", "must be true or false")):
        with pytest.raises(LinkError, match=words):
            _calendar_policies([bad])
