"""calrelay: a local CalDAV server that relays a CRM's booking calendars to iCloud."""

__version__ = "0.1.0"
