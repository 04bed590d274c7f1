"""The policy rules as pure functions: parsing, and what each does to an appointment or a mirrored event."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from icalendar import Calendar

from proxy.relay import policies, transforms
from proxy.relay.policies import AttendeeMode, LinkPolicies

APPOINTMENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:a1\r\nDTSTAMP:20260101T000000Z\r\n"
    "DTSTART:20261204T100000Z\r\nDTEND:20261204T110000Z\r\nSUMMARY:Demo\r\nDESCRIPTION:Notes\r\n"
    "LOCATION:Room 4\r\nURL:https://crm.test/1\r\nORGANIZER:mailto:sales@crm.test\r\n"
    "ATTENDEE;CN=Jane:mailto:jane@client.test\r\nATTENDEE:mailto:max@icloud.com\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def _event(text: str):
    return Calendar.from_ical(text).walk("VEVENT")[0]


def test_defaults_and_refusals() -> None:
    assert policies.parse({}) == LinkPolicies()
    assert policies.parse({"attendees": "schedule-agent-client"}).attendees is AttendeeMode.SCHEDULE_AGENT_CLIENT
    stored = json.dumps(policies.parse({"privacy_title": "Busy"}).as_dict())
    assert policies.from_json(stored).privacy_title == "Busy" and policies.from_json("{}") == LinkPolicies()
    for bad, words in (
        ({"attendees": "x"}, "must be one of"),
        ({"travel_time_busy": "yes"}, "true or false"),
        ({"privacy_title": "{nope}"}, "only {title} and {calendar}"),
        ({"privacy_title": 3}, "a text"),
        ({"what": 1}, "unknown policy"),
    ):
        with pytest.raises(ValueError, match=words.replace("{", r"\{").replace("}", r"\}")):
            policies.parse(bad)


def test_attendees_into_the_description_by_default() -> None:
    sent = _event(transforms.to_icloud(APPOINTMENT, LinkPolicies()))
    assert "ATTENDEE" not in sent and "ORGANIZER" not in sent
    assert str(sent["DESCRIPTION"]) == "Notes\n\nWith: Jane <jane@client.test>, max@icloud.com"
    kept = _event(transforms.to_icloud(APPOINTMENT, policies.parse({"attendees": "schedule-agent-client"})))
    assert {a.params["SCHEDULE-AGENT"] for a in kept["ATTENDEE"]} == {"CLIENT"}
    assert str(kept["DESCRIPTION"]) == "Notes"


def test_merge_drops_the_with_line_and_keeps_private_fields() -> None:
    sent = transforms.to_icloud(APPOINTMENT, LinkPolicies())
    edited = sent.replace("SUMMARY:Demo", "SUMMARY:Moved")
    merged = _event(transforms.merge_icloud_edit(APPOINTMENT, edited, LinkPolicies()))
    assert str(merged["SUMMARY"]) == "Moved" and str(merged["DESCRIPTION"]) == "Notes"
    assert len(merged["ATTENDEE"]) == 2
    private = policies.parse({"privacy_title": "{calendar}: {title}"})
    hidden = transforms.to_icloud(APPOINTMENT, private, "Sales")
    assert str(_event(hidden)["SUMMARY"]) == "Sales: Demo"
    assert not {"DESCRIPTION", "LOCATION", "URL", "ATTENDEE", "ORGANIZER"} & set(_event(hidden))
    moved = hidden.replace("DTSTART:20261204T100000Z", "DTSTART:20261204T090000Z")
    merged = _event(transforms.merge_icloud_edit(APPOINTMENT, moved, private))
    assert str(merged["SUMMARY"]) == "Demo" and str(merged["LOCATION"]) == "Room 4"
    assert merged.decoded("DTSTART").hour == 9


@given(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40))
def test_any_title_template_without_braces_is_a_fixed_title(title: str) -> None:
    fixed = title.replace("{", "").replace("}", "")
    chosen = policies.parse({"privacy_title": fixed})
    assert chosen.title("anything", "cal") == fixed


def test_configured_defaults_are_checked() -> None:
    from proxy.config import ConfigError, load

    assert load().policies.attendees == "description"
    with pytest.raises(ConfigError, match="policies: policy all_day must be one of"):
        load(overrides={"policies": {"all_day": "sometimes"}})
