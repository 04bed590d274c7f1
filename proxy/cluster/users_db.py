"""Users in the database (``user_accounts``): ``calrelay users add`` on any instance's configuration serves all.

The users live in the database every instance shares (``[storage] database``), not in a file of one instance's
data directory. :class:`UsersTable` has the interface of :class:`proxy.auth.UsersFile` (``records``, ``write``,
``add``, ``set_password``, ``remove``). Names, bcrypt hashes and the service flag are stored as the users file
stored them. :func:`open_users` is how the server and every ``calrelay`` command get the users: it creates the
tables where missing and imports a users file left from before, once (see :func:`import_users_file`).

Every request authenticates, so :meth:`UsersTable.records` must be cheap: each change bumps a generation number
in the one-row table ``user_accounts_generation`` in the same transaction, and ``records`` trusts its copy for
``refresh_seconds`` (1 s) before it looks at that number again (one primary-key read), re-reading the users only
when it has moved. A user added, removed or given a new password on another instance is therefore seen within
about a second; a change made through the same table is seen at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import suppress
from pathlib import Path

import bcrypt
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from proxy.auth import UserExists, UserRecord, UsersFile, valid_user_name
from proxy.config import Settings
from proxy.database import metadata, redacted, writing
from proxy.outage import DatabaseUnavailable, database_unavailable

logger = logging.getLogger(__name__)

#: How long :meth:`UsersTable.records` trusts its copy before looking at the generation number again.
REFRESH_SECONDS = 1.0
#: What a users file is renamed to once its users are in the database.
IMPORTED_SUFFIX = ".imported"

users = sa.Table(
    "user_accounts",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.LargeBinary, nullable=False),
    sa.Column("is_service", sa.Boolean, nullable=False, server_default=sa.false()),
)

users_generation = sa.Table(
    "user_accounts_generation",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False),
)


class UsersTable:
    """The users, in the shared database; same interface as :class:`proxy.auth.UsersFile`."""

    def __init__(self, engine: Engine, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        # (when the generation was last looked at, that generation, the users as of it): replaced as a whole.
        self._cache: tuple[float, int | None, dict[str, UserRecord]] = (-float("inf"), None, {})
        self._refreshing = threading.Lock()

    def records(self) -> dict[str, UserRecord]:
        if time.monotonic() - self._cache[0] < self.refresh_seconds:
            return self._cache[2]
        with self._refreshing:  # one thread of the pool looks, the others wait for its answer
            checked_at, known, records = self._cache
            if time.monotonic() - checked_at < self.refresh_seconds:
                return records
            now = time.monotonic()
            with self.engine.connect() as connection:
                generation = connection.execute(sa.select(users_generation.c.generation)).scalar() or 0
                if generation != known:
                    # Read after the generation: the rows are at least as new as the number they are kept under.
                    rows = connection.execute(sa.select(users))
                    records = {r.name: UserRecord(r.name, bytes(r.password_hash), r.is_service) for r in rows}
            self._cache = (now, generation, records)
            return records

    def _changed(self) -> None:
        """This table wrote: its next ``records`` reads the database instead of its copy."""
        self._cache = (-float("inf"), None, {})

    def write(self, records: dict[str, UserRecord]) -> None:
        """Replace every user with ``records`` (as writing the whole users file would)."""
        with writing(self.engine) as connection:
            connection.execute(users.delete())
            if records:
                connection.execute(
                    users.insert(),
                    [
                        {"name": r.name, "password_hash": r.password_hash, "is_service": r.is_service}
                        for r in records.values()
                    ],
                )
            _bump(connection)
        self._changed()

    def add(self, name: str, password: str, is_service: bool, *, replace: bool = False) -> None:
        """Add a user; an existing name is refused (:class:`UserExists`) unless ``replace``."""
        if not valid_user_name(name):
            raise ValueError(
                f"invalid user name {name!r}: use letters, digits, '.', '_', '-', '@' (not starting with '.')"
            )
        if not password:
            raise ValueError("the password must not be empty")
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        with writing(self.engine) as connection:
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            insert = dialect.insert(users).values(name=name, password_hash=hashed, is_service=is_service)
            if replace:
                statement = insert.on_conflict_do_update(
                    index_elements=[users.c.name], set_={"password_hash": hashed, "is_service": is_service}
                )
            else:
                statement = insert.on_conflict_do_nothing()
            # RETURNING, not rowcount: psycopg reports -1 for some INSERT ... ON CONFLICT statements.
            if connection.execute(statement.returning(users.c.name)).first() is None:
                row = connection.execute(sa.select(users).where(users.c.name == name)).one()
                raise UserExists(UserRecord(row.name, bytes(row.password_hash), row.is_service))
            _bump(connection)
        self._changed()

    def set_password(self, name: str, password: str) -> None:
        """Change an existing user's password; the role stays as it is. KeyError for an unknown name."""
        if not password:
            raise ValueError("the password must not be empty")
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        with writing(self.engine) as connection:
            changed = connection.execute(
                users.update().where(users.c.name == name).values(password_hash=hashed)
            ).rowcount
            if changed:
                _bump(connection)
        if not changed:
            raise KeyError(name)
        self._changed()

    def remove(self, name: str) -> bool:
        with writing(self.engine) as connection:
            removed = connection.execute(users.delete().where(users.c.name == name)).rowcount == 1
            if removed:
                _bump(connection)
        self._changed()
        return removed

    def import_file(self, users_file: UsersFile) -> int:
        """Copy the users of a users file in (replacing same-named ones, keeping the others); how many."""
        records = users_file.records()
        if not records:
            return 0
        with writing(self.engine) as connection:
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            insert = dialect.insert(users)
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=[users.c.name],
                    set_={"password_hash": insert.excluded.password_hash, "is_service": insert.excluded.is_service},
                ),
                [{"name": r.name, "password_hash": r.password_hash, "is_service": r.is_service}
                 for r in records.values()],
            )
            _bump(connection)
        self._changed()
        return len(records)


def create_tables(engine: Engine) -> None:
    """Create the users' tables where missing. (The schema module's ``upgrade`` takes this over.)"""
    with writing(engine) as connection:
        if connection.dialect.name == "postgresql":
            # Instances starting together on a fresh database: one creates, the others wait and find the tables.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7243551)"))
        metadata.create_all(connection, tables=[users, users_generation])


def import_users_file(table: UsersTable, path: Path) -> int | None:
    """Import the users file at ``path`` once, if there is one: its users are copied into the database
    (replacing same-named ones) and the file is renamed to ``<name>.imported``, so that it is never read again
    (a user removed later does not come back). None when there is no file."""
    if not path.is_file():
        return None
    count = table.import_file(UsersFile(path))
    with suppress(FileNotFoundError):  # another process starting at the same moment moved it first
        os.replace(path, path.with_name(path.name + IMPORTED_SUFFIX))
    logger.warning(
        "imported %d %s from the users file %s into the database; the file is now %s%s and no longer read "
        "(manage users with `calrelay users`)", count, "user" if count == 1 else "users", path, path.name,
        IMPORTED_SUFFIX,
    )
    return count


def open_users(settings: Settings, engine: Engine) -> UsersTable:
    """The users of ``settings``' database on ``engine``; tables created and a left-over users file imported."""
    try:
        create_tables(engine)
    except Exception as error:
        if not database_unavailable(error):
            raise
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise DatabaseUnavailable(
            f"the database {redacted(engine.url)} is unavailable ({reason}); check [storage] database "
            "and that the database server is running"
        ) from error
    table = UsersTable(engine)
    import_users_file(table, settings.users_file)
    return table


def _bump(connection: sa.Connection) -> None:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(
        dialect.insert(users_generation)
        .values(id=1, generation=1)
        .on_conflict_do_update(
            index_elements=[users_generation.c.id], set_={"generation": users_generation.c.generation + 1}
        )
    )
