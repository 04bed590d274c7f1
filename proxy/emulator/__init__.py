"""A local server that behaves like iCloud's CalDAV service (see ``docs/emulator.md``).

Other code starts it in-process with :class:`EmulatorServer`; ``calrelay emulator`` runs it standalone.
"""

from proxy.emulator.accounts import Account, CalendarSpec, default_accounts, load_accounts
from proxy.emulator.app import EmulatorServer, make_emulator_app
from proxy.emulator.context import Emulator, EmulatorOptions
from proxy.emulator.faults import FaultSettings
from proxy.emulator.mail import Invitation

__all__ = [
    "Account",
    "CalendarSpec",
    "Emulator",
    "EmulatorOptions",
    "EmulatorServer",
    "FaultSettings",
    "Invitation",
    "default_accounts",
    "load_accounts",
    "make_emulator_app",
]
