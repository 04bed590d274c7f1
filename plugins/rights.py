"""Radicale rights plugin: owners, service accounts and read-only mirrors.

- A person's credentials reach only ``/<own-name>/`` and the collections below it.
- A service account (the CRM backend) may read and write every principal.
- A mirror of an iCloud *conflict* calendar is read only for everybody (rule 4): only the relay, which
  writes through the storage directly, fills it.
"""

from __future__ import annotations

from collections.abc import Callable

from radicale import pathutils
from radicale.rights import BaseRights

from plugins.scope import current, refuse
from proxy.model import MirrorRole


class Rights(BaseRights):
    #: Set by the engine: the mirror role of a collection path, or None for an ordinary collection.
    mirror_role: Callable[[str], MirrorRole | None] = staticmethod(lambda path: None)
    #: Set by the engine: whether a user is a service account. (Radicale does not pass the user's groups
    #: when it checks the destination of a MOVE, so the role cannot travel as a group.)
    is_service: Callable[[str], bool] = staticmethod(lambda user: False)

    def authorization(self, user: str, user_groups: set, path: str) -> str:
        # A PROPFIND asks for every item's collection: decided once per request (and a refusal recorded once).
        scope = current()
        if scope is None:
            return self._authorization(user, path)
        key = (user, path)
        if key not in scope.authorizations:
            scope.authorizations[key] = self._authorization(user, path)
        return scope.authorizations[key]

    def _authorization(self, user: str, path: str) -> str:
        if not user:
            return ""
        sane_path = pathutils.strip_path(path)
        if not sane_path:
            return "R"  # the root: lists only what the rights below allow
        owner, _, rest = sane_path.partition("/")
        if owner != user and not self.is_service(user):
            return ""
        if not rest:
            return "RW"  # the principal: may create and delete calendars under it
        if "/" in rest:
            return ""  # calendars hold objects, not nested collections
        if self.mirror_role("/" + sane_path + "/") is MirrorRole.CONFLICT:
            refuse(
                f"/{sane_path}/ mirrors an iCloud conflict calendar and is read only; "
                "write to a booking calendar instead"
            )
            return "r"
        return "rw"
