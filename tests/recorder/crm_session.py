"""A CRM's CalDAV session, as python-caldav plays it: the conversation the recorder tests record and replay,
and the one kept in ``tests/recordings/crm-session.har``.

Discovery, MKCALENDAR of a round-robin booking calendar (its kind set by PROPPATCH), PUTs of two
appointments and a blocked slot, a time-range REPORT, sync-collection, an update, DELETE and a second
sync-collection from the token received earlier. Names and UIDs are fixed so that a replay addresses the same
resources.
"""

from __future__ import annotations

from datetime import UTC, datetime

import caldav

CALENDAR_ID = "bookings"
KIND_PROPPATCH = b"""<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:R="urn:calrelay">
  <D:set><D:prop><R:calendar-kind>round-robin</R:calendar-kind></D:prop></D:set>
</D:propertyupdate>"""


def vevent(uid: str, start: str, end: str, summary: str, kind: str = "APPOINTMENT") -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Example CRM//Bookings//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20261120T090000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\nSUMMARY:{summary}\r\n"
        f"X-CALRELAY-KIND:{kind}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


INTRO = vevent("appt-intro", "20261201T090000Z", "20261201T093000Z", "Intro call")
DEMO = vevent("appt-demo", "20261202T140000Z", "20261202T150000Z", "Product demo")
LUNCH = vevent("blocked-lunch", "20261201T120000Z", "20261201T130000Z", "Lunch", kind="BLOCKED")


def run(url: str, user: str, password: str, owner: str) -> None:
    """Play the session as ``user`` (the CRM's service account) in ``owner``'s calendar home."""
    with caldav.DAVClient(url=url, username=user, password=password) as client:
        client.principal()  # discovery: current-user-principal, calendar-home-set
        # The service account works in the owner's home, not its own.
        home = caldav.Principal(client, url=f"{url.rstrip('/')}/{owner}/")
        calendar = caldav.Calendar(client, parent=home, id=CALENDAR_ID, name="Bookings")
        calendar.save()  # MKCALENDAR
        response = client.proppatch(str(calendar.url), KIND_PROPPATCH.decode())
        assert response.status == 207, response.status
        intro = calendar.save_event(INTRO)
        calendar.save_event(DEMO)
        calendar.save_event(LUNCH)
        found = calendar.search(
            start=datetime(2026, 12, 1, tzinfo=UTC), end=datetime(2026, 12, 2, tzinfo=UTC), event=True
        )
        assert sorted(str(event.icalendar_component["UID"]) for event in found) == ["appt-intro", "blocked-lunch"]
        synced = calendar.objects_by_sync_token(load_objects=True)
        assert len(list(synced)) == 3
        moved = INTRO.replace("T090000Z", "T100000Z").replace("T093000Z", "T103000Z")  # start and end move
        intro.data = moved.replace("Intro call", "Intro call (moved)")
        intro.save()
        calendar.event_by_uid("blocked-lunch").delete()
        changes = calendar.objects_by_sync_token(sync_token=synced.sync_token, load_objects=True)
        assert len(list(changes)) == 2  # the moved appointment and the deleted slot
