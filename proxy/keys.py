"""Typed keys for what the application holds (aiohttp ``AppKey``s: no globals)."""

from __future__ import annotations

from aiohttp import web

from proxy.auth import Authenticator
from proxy.config import Settings
from proxy.emulator import EmulatorServer
from proxy.engine import ChangeBus, Engine
from proxy.relay.supervisor import Relay
from proxy.state import AsyncState

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
CHANGES = web.AppKey("changes", ChangeBus)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
STATE = web.AppKey("state", AsyncState)
EMULATOR = web.AppKey("emulator", EmulatorServer)
RELAY = web.AppKey("relay", Relay)
