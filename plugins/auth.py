"""Radicale auth plugin: the identity comes from calrelay's front door.

The aiohttp front door verifies credentials once for every endpoint (CalDAV, the JSON API, the recorder
switch) and hands the result to Radicale in the WSGI environ: ``REMOTE_USER`` and ``calrelay.role``.
Radicale's own password checking and its fixed delays are therefore switched off.
"""

from __future__ import annotations

from radicale import types
from radicale.auth import AuthContext, BaseAuth

ROLE_ENVIRON_KEY = "calrelay.role"
SERVICE_ROLE = "service"


class Auth(BaseAuth):
    def get_external_login(self, environ: types.WSGIEnviron) -> tuple[str, str]:
        return environ.get("REMOTE_USER", ""), environ.get(ROLE_ENVIRON_KEY, "")

    def _login_ext_with_groups(self, login: str, password: str, context: AuthContext) -> tuple[str, set]:
        # ``password`` carries the role the front door established, never a secret.
        return login, {password} if password else set()
