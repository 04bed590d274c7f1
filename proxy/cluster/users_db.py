"""Users in the database (``user_accounts``): ``calrelay users add`` on any instance's configuration serves all.

:class:`UsersTable` has the interface of :class:`proxy.auth.UsersFile` (``records``, ``write``, ``add``,
``set_password``, ``remove``), so the authenticator and ``calrelay users`` can use either. Names, bcrypt hashes
and the service flag are stored as the users file stores them; :meth:`UsersTable.import_file` copies a users
file in.

Every request authenticates, so :meth:`UsersTable.records` must be cheap: each change bumps a generation number
in the one-row table ``user_accounts_generation`` in the same transaction, and ``records`` re-reads the users only
when that number has moved (one primary-key read per call otherwise). A change on another instance is therefore seen
by the next request.
"""

from __future__ import annotations

import bcrypt
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from proxy.auth import UserExists, UserRecord, UsersFile, valid_user_name
from proxy.database import metadata, writing

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

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._generation: int | None = None
        self._records: dict[str, UserRecord] = {}

    def records(self) -> dict[str, UserRecord]:
        with self.engine.connect() as connection:
            generation = connection.execute(sa.select(users_generation.c.generation)).scalar() or 0
            if generation != self._generation:
                rows = connection.execute(sa.select(users))
                self._records = {r.name: UserRecord(r.name, bytes(r.password_hash), r.is_service) for r in rows}
                self._generation = generation
        return self._records

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

    def set_password(self, name: str, password: str) -> None:
        """Change an existing user's password; the role stays as it is. KeyError for an unknown name."""
        if not password:
            raise ValueError("the password must not be empty")
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        with writing(self.engine) as connection:
            if connection.execute(users.update().where(users.c.name == name).values(password_hash=hashed)).rowcount:
                _bump(connection)
                return
        raise KeyError(name)

    def remove(self, name: str) -> bool:
        with writing(self.engine) as connection:
            removed = connection.execute(users.delete().where(users.c.name == name)).rowcount == 1
            if removed:
                _bump(connection)
        return removed

    def import_file(self, users_file: UsersFile) -> int:
        """Copy the users of a users file in (replacing same-named ones); returns how many were copied."""
        records = users_file.records()
        merged = {**self.records(), **records}
        self.write(merged)
        return len(records)


def _bump(connection: sa.Connection) -> None:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(
        dialect.insert(users_generation)
        .values(id=1, generation=1)
        .on_conflict_do_update(
            index_elements=[users_generation.c.id], set_={"generation": users_generation.c.generation + 1}
        )
    )
