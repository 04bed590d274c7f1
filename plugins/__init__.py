"""Radicale plugins that turn a plain Radicale into calrelay's CalDAV engine.

Authentication is not among them: the front door checks credentials once for every endpoint and hands
the user to Radicale as ``REMOTE_USER`` (Radicale's ``remote_user`` auth type).

- ``plugins.rights``: each user sees only their own principal; service accounts see every principal;
  mirrors of iCloud conflict calendars are read only.
- ``plugins.sqlstore``: the storage, on SQL (SQLite or PostgreSQL), with the change signal for the relay.
- ``plugins.rules``: the CRM rules the storage enforces on every write.
- ``plugins.scope``: the per-request scope through which the plugins hand changes and refusal reasons
  back to the front door.
"""
