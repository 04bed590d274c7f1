"""The relay: reconciliation of the CRM's booking calendars with iCloud (design §4)."""
