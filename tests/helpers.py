"""Small builders shared by the tests: iCalendar bodies and raw CalDAV requests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import requests

MKCALENDAR_WITH_KIND = """<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CR="urn:calrelay">
  <D:set><D:prop>
    <D:displayname>{name}</D:displayname>
    <C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>
    {kind}
  </D:prop></D:set>
</C:mkcalendar>"""

PROPPATCH_KIND = """<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:CR="urn:calrelay">
  <D:set><D:prop><CR:calendar-kind>{kind}</CR:calendar-kind></D:prop></D:set>
</D:propertyupdate>"""


def event(
    uid: str,
    start: datetime,
    minutes: int = 30,
    kind: str | None = None,
    summary: str = "Call",
    extra: str = "",
) -> str:
    """A one-VEVENT calendar object; ``start`` must be timezone-aware (UTC is written)."""
    kind_line = f"X-CALRELAY-KIND:{kind}\r\n" if kind else ""
    end = start + timedelta(minutes=minutes)
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calrelay tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20261121T000000Z\r\nDTSTART:{start:%Y%m%dT%H%M%SZ}\r\n"
        f"DTEND:{end:%Y%m%dT%H%M%SZ}\r\nSUMMARY:{summary}\r\n{kind_line}{extra}"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def mkcalendar(url: str, auth: tuple[str, str], name: str, kind: str | None = None) -> requests.Response:
    """MKCALENDAR with a display name and, optionally, the booking kind in one request (as a CRM does)."""
    kind_xml = f"<CR:calendar-kind>{kind}</CR:calendar-kind>" if kind else ""
    return requests.request(
        "MKCALENDAR",
        url,
        auth=auth,
        timeout=10,
        data=MKCALENDAR_WITH_KIND.format(name=name, kind=kind_xml).encode(),
        headers={"Content-Type": "application/xml; charset=utf-8"},
    )


def proppatch_kind(url: str, auth: tuple[str, str], kind: str) -> requests.Response:
    return requests.request(
        "PROPPATCH",
        url,
        auth=auth,
        timeout=10,
        data=PROPPATCH_KIND.format(kind=kind).encode(),
        headers={"Content-Type": "application/xml; charset=utf-8"},
    )


def put(url: str, auth: tuple[str, str], body: str, **headers: str) -> requests.Response:
    return requests.put(
        url,
        auth=auth,
        data=body.encode(),
        timeout=10,
        headers={"Content-Type": "text/calendar; charset=utf-8", **headers},
    )


def getctag(url: str, auth: tuple[str, str]) -> str:
    """The collection's CS:getctag, read with a Depth 0 PROPFIND."""
    import defusedxml.ElementTree as ET

    response = requests.request(
        "PROPFIND",
        url,
        auth=auth,
        timeout=10,
        headers={"Depth": "0", "Content-Type": "application/xml"},
        data=b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/">'
        b"<D:prop><CS:getctag/></D:prop></D:propfind>",
    )
    response.raise_for_status()
    element = ET.fromstring(response.content).find(".//{http://calendarserver.org/ns/}getctag")
    assert element is not None and element.text, response.text
    return element.text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def plain_radicale(root: Path, settings: str = "[auth]\ntype = none\n") -> Iterator[str]:
    """A standalone Radicale (``python -m radicale``) on a free loopback port; yields its URL.

    ``settings`` is added to the configuration (auth and rights sections); storage lives under ``root``.
    """
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = root / f"radicale-{port}.ini"
    config.write_text(
        f"[server]\nhosts = 127.0.0.1:{port}\n[storage]\nfilesystem_folder = {root / f'collections-{port}'}\n"
        f"[web]\ntype = none\n[logging]\nlevel = error\n{settings}"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "radicale", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stderr.read().decode() if process.poll() is not None and process.stderr else ""
                    raise RuntimeError(f"radicale did not start: {output}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
