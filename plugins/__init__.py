"""Radicale plugins that turn a plain Radicale into calrelay's CalDAV engine.

- ``plugins.auth``: trusts the identity established by calrelay's front door (one auth source for all).
- ``plugins.rights``: each user sees only their own principal; service accounts see every principal;
  mirrors of iCloud conflict calendars are read only.
- ``plugins.storage``: Radicale's filesystem storage plus the CRM rules and the change signal.
- ``plugins.scope``: the per-request scope through which the plugins hand changes and refusal reasons
  back to the front door.
"""
