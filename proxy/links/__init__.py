"""Linking a calrelay user to an iCloud account (rules 1-4 and 10 of the design).

- ``rules``: pure validation: the app-specific password, which iCloud calendars may be primary or conflict,
  which booking calendars integrate, and where mirrors live.
- ``service``: the I/O: verifying credentials upstream, creating mirror collections, saving the link.
- ``api`` and ``cli``: the same operations for the CRM (JSON under ``/api/v1/``) and for people.
"""
