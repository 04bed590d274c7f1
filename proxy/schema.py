"""The database schema's version: creating, upgrading and checking it.

Every table of calrelay is declared on :data:`proxy.database.metadata`; :data:`VERSION` is the version of
that whole schema, recorded in the one-row table ``schema_version``. An empty database is created at the
current version. A database at an older version is brought up by :func:`upgrade` (``calrelay db upgrade``),
which runs the steps in :data:`STEPS` in order, each in its own transaction; a newer or unknown version is
refused, so that an old calrelay never writes to a database it does not understand.

To change the schema: declare the change on the tables, add a step ``N -> N+1`` to :data:`STEPS` that does
the same to an existing database, and bump :data:`VERSION`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa

from proxy import database

logger = logging.getLogger(__name__)

VERSION = 2

schema_version = sa.Table(
    "schema_version",
    database.metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1: one row
    sa.Column("version", sa.Integer, nullable=False),
)

def _busy_instances(connection: sa.Connection) -> None:
    """1 -> 2: the instance index rows carry what availability reads (``plugins.sqlstore.busy``), so that
    it needs no expansion of its own: the index is made again from every stored event."""
    from plugins.sqlstore import horizon, storage

    horizon.rebuild(connection, storage.DEFAULT_HORIZON, storage.DEFAULT_CAP)


#: version -> the step that takes a database from that version to the next.
STEPS: dict[int, Callable[[sa.Connection], None]] = {1: _busy_instances}


class SchemaError(RuntimeError):
    """The database's schema is not one this calrelay can use; the message says what to do."""


def _import_tables() -> None:
    """Import every module that declares tables, so that ``metadata`` holds them all."""
    import plugins.sqlstore.tables  # noqa: F401
    import proxy.audit
    import proxy.cluster.budget
    import proxy.cluster.leases
    import proxy.cluster.users_db
    import proxy.feeds
    import proxy.key_check
    import proxy.relay.outbox
    import proxy.state
    import proxy.user_settings  # noqa: F401


def current(connection: sa.Connection) -> int | None:
    """The recorded version; None for a database without calrelay's tables."""
    if not sa.inspect(connection).has_table("schema_version"):
        return None
    return connection.execute(sa.select(schema_version.c.version)).scalar()


def upgrade(engine: sa.Engine) -> tuple[int | None, int]:
    """Create or upgrade the schema to :data:`VERSION`; returns (version before, version after)."""
    _import_tables()
    with database.writing(engine) as connection:
        before = current(connection)
        if before is None:
            database.metadata.create_all(connection)
            connection.execute(schema_version.insert().values(id=1, version=VERSION))
            logger.info("database schema created at version %d", VERSION)
            return None, VERSION
    if before > VERSION:
        raise SchemaError(_newer(before))
    version = before
    while version < VERSION:
        with database.writing(engine) as connection:
            STEPS[version](connection)
            # Tables added since are created here; the steps alter existing ones.
            database.metadata.create_all(connection)
            version += 1
            connection.execute(schema_version.update().values(version=version))
        logger.info("database schema upgraded to version %d", version)
    with database.writing(engine) as connection:
        database.metadata.create_all(connection)  # tables other parts declared meanwhile, at this version
    return before, VERSION


def check(engine: sa.Engine) -> None:
    """Raise :class:`SchemaError` unless the database is at :data:`VERSION` (an empty one is fine)."""
    with database.reading(engine) as connection:
        version = current(connection)
    if version is None or version == VERSION:
        return
    if version > VERSION:
        raise SchemaError(_newer(version))
    raise SchemaError(
        f"the database {database.redacted(engine.url)} has schema version {version}, this calrelay needs "
        f"{VERSION}: run `calrelay db upgrade` (back the database up first)"
    )


def prepare(engine: sa.Engine) -> None:
    """What a starting server does: refuse a schema of another version, create a missing one."""
    check(engine)
    upgrade(engine)


def _newer(version: int) -> str:
    return (
        f"the database has schema version {version}, newer than this calrelay understands ({VERSION}): "
        "run the calrelay release that wrote it, or a newer one"
    )
