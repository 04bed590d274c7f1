"""Shared per-emulator state and the typed aiohttp application keys.

One :class:`Emulator` backs both listening ports (the discovery host and the partition host); each port has
its own aiohttp application that knows its role.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from aiohttp import web

from proxy.emulator.faults import FaultState
from proxy.emulator.mail import MailLog
from proxy.emulator.store import Store

Role = Literal["discovery", "partition"]


@dataclass
class EmulatorOptions:
    """Switches for the places where iCloud's behaviour is uncertain or varies (checklist [?] items).

    They can be given at start and changed at run time through ``POST /_emulator/options``.
    """

    #: ``multistatus``: /.well-known/caldav answers 207 like the principal; ``redirect``: 301 to ``/``
    well_known: Literal["multistatus", "redirect"] = "multistatus"
    #: None: the discovery host does not redirect /<DSID>/calendars/; 301 or 302: it redirects to the partition
    home_redirect: int | None = None
    #: True: calendar homes answer only on the partition host (the discovery host says 404), so a client that
    #: keeps talking to the discovery host after discovery fails as it would against iCloud. False: both serve.
    home_on_partition_only: bool = True
    #: status for a calendar-query whose filter has only the VCALENDAR comp-filter: 400, or 403 with a
    #: CalDAV precondition element
    vcalendar_filter_status: int = 400
    #: include ``<valid-sync-token/>`` in the 403 for an unknown sync token (iCloud sends a bare 403)
    sync_token_error_element: bool = False
    #: a Host header naming one of these answers 501, like the apex icloud.com CDN does
    apex_hosts: tuple[str, ...] = ("icloud.com", "icloud.test")

    def update(self, changes: dict[str, Any]) -> None:
        known = {option.name for option in fields(self)}
        for key in changes:
            if key not in known:
                raise ValueError(f"unknown option {key!r}; known: {', '.join(sorted(known))}")
        well_known = changes.get("well_known", self.well_known)
        if well_known not in ("multistatus", "redirect"):
            raise ValueError("well_known must be 'multistatus' or 'redirect'")
        home_redirect = changes.get("home_redirect", self.home_redirect)
        if home_redirect not in (None, 301, 302):
            raise ValueError("home_redirect must be null, 301 or 302")
        if changes.get("vcalendar_filter_status", self.vcalendar_filter_status) not in (400, 403):
            raise ValueError("vcalendar_filter_status must be 400 or 403")
        for switch in ("sync_token_error_element", "home_on_partition_only"):
            if not isinstance(changes.get(switch, False), bool):
                raise ValueError(f"{switch} must be true or false")
        for key, value in changes.items():
            setattr(self, key, tuple(value) if key == "apex_hosts" else value)

    def as_dict(self) -> dict[str, Any]:
        return {option.name: getattr(self, option.name) for option in fields(self)}


@dataclass
class Emulator:
    store: Store
    options: EmulatorOptions = field(default_factory=EmulatorOptions)
    faults: FaultState = field(default_factory=FaultState)
    mail: MailLog = field(default_factory=MailLog)
    #: filled in once both ports are bound (``http://host:port/``)
    discovery_url: str = ""
    partition_url: str = ""
    #: the hex in ``Server: AppleHttpServer/<hex>``
    server_build: str = field(default_factory=lambda: secrets.token_hex(20))


EMULATOR = web.AppKey("emulator", Emulator)
ROLE = web.AppKey("role", str)
