"""The invitation log: the e-mail iCloud's server-side scheduling would have sent.

iCloud e-mails every ATTENDEE of a PUT event unless the attendee carries ``SCHEDULE-AGENT=CLIENT`` (the client
then takes responsibility for scheduling), and sends a CANCEL to them when the event is deleted. A relay must
never trigger this by accident; tests read this log to prove it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from typing import Any

from icalendar import Calendar


@dataclass(frozen=True)
class Invitation:
    id: int
    time: float
    #: REQUEST (create/update) or CANCEL (delete)
    method: str
    sender: str
    recipients: tuple[str, ...]
    uid: str
    summary: str
    href: str


def scheduled_recipients(calendar: Calendar, own_addresses: tuple[str, ...]) -> list[str]:
    """Attendees the server would e-mail: all but the account's own addresses and SCHEDULE-AGENT=CLIENT."""
    own = {address.lower() for address in own_addresses}
    recipients: list[str] = []
    for component in calendar.walk():
        if component.name not in ("VEVENT", "VTODO"):
            continue
        attendees = component.get("ATTENDEE", [])
        for attendee in attendees if isinstance(attendees, list) else [attendees]:
            agent = str(attendee.params.get("SCHEDULE-AGENT", "SERVER")).upper()
            address = str(attendee).removeprefix("mailto:").removeprefix("MAILTO:")
            if agent == "CLIENT" or address.lower() in own or address in recipients:
                continue
            recipients.append(address)
    return recipients


class MailLog:
    def __init__(self) -> None:
        self._entries: list[Invitation] = []
        self._ids = itertools.count(1)

    def record(
        self, method: str, sender: str, recipients: list[str], uid: str, summary: str, href: str
    ) -> Invitation:
        entry = Invitation(
            next(self._ids), time.time(), method, sender, tuple(recipients), uid, summary, href
        )
        self._entries.append(entry)
        return entry

    def entries(self) -> list[Invitation]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(entry) for entry in self._entries]
