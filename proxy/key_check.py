"""The start-up check that this instance's secret key is the one the database's secrets were encrypted with.

Every instance sharing a database encrypts and decrypts the iCloud app-specific passwords of all links, so all
of them need the same key (``CALRELAY_SECRET_KEY`` or ``[storage] secret_key_file``). An instance with another
key would otherwise start, serve, and only fail when it relays for a link (or, worse, store a new link that no
other instance can read). So before anything starts:

- the one-row table ``secret_key_check`` holds a token encrypted with the key the database was first used with;
  the first instance writes it (``INSERT ... ON CONFLICT DO NOTHING``, so of two instances starting together
  with different keys exactly one wins and the other fails the check that follows);
- a database from before this check has no token: then the links' secrets are the test, and the token is
  written only when one of them decrypts (or there are none);
- failing that, :func:`open_secret_box` raises :class:`SecretKeyMismatch`, a configuration error: the command
  stops with one line saying which key was used and what to set.

A link whose secret does not decrypt although the key passed (a stray row copied in by hand) is logged, by
name, as needing to be linked again; it does not stop the other users.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from proxy.config import ConfigError, Settings
from proxy.database import metadata, writing
from proxy.secretbox import KEY_ENVIRONMENT_VARIABLE, SecretBox, SecretError
from proxy.state import links_table

logger = logging.getLogger(__name__)

key_check = sa.Table(
    "secret_key_check",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

#: What the check token decrypts to.
PLAINTEXT = "calrelay secret key check"


class SecretKeyMismatch(ConfigError):
    """This instance's key cannot decrypt what the database holds (or cannot be loaded at all)."""


def open_secret_box(settings: Settings, engine: Engine) -> SecretBox:
    """The secret box of ``settings``, verified against the database on ``engine`` (see the module docstring)."""
    try:
        box = SecretBox.for_settings(settings)
    except SecretError as error:
        raise SecretKeyMismatch(str(error)) from None
    verify(engine, box)
    return box


def verify(engine: Engine, box: SecretBox) -> None:
    """Raise :class:`SecretKeyMismatch` unless ``box`` holds the database's key; record the check token."""
    with writing(engine) as connection:
        if connection.dialect.name == "postgresql":
            # Instances starting together on a fresh database: one creates, the others wait and find the table.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7243551)"))
        metadata.create_all(connection, tables=[key_check])
    with engine.connect() as connection:
        token = connection.execute(sa.select(key_check.c.token).where(key_check.c.id == 1)).scalar()
        links = connection.execute(sa.select(links_table.c.user, links_table.c.secret)).all()
    if token is None:
        readable = [user for user, secret in links if _decrypts(box, bytes(secret))]
        if links and not readable:
            raise _mismatch(box, f"none of the {len(links)} stored iCloud passwords")
        token = _record(engine, box)
    if not _decrypts(box, bytes(token), PLAINTEXT):
        raise _mismatch(box, "the database's key check (written by the first instance that used it)")
    unreadable = sorted(user for user, secret in links if not _decrypts(box, bytes(secret)))
    if unreadable:
        logger.error("the stored iCloud passwords of %s cannot be decrypted with %s although the key is the "
                     "database's: link %s again", ", ".join(unreadable), box.source,
                     "them" if len(unreadable) > 1 else "it")


def _record(engine: Engine, box: SecretBox) -> bytes:
    """Write the check token unless another instance wrote one first; the token the database holds now."""
    with writing(engine) as connection:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        connection.execute(
            dialect.insert(key_check)
            .values(id=1, token=box.encrypt(PLAINTEXT), created_at=time.time())
            .on_conflict_do_nothing()
        )
        return bytes(connection.execute(sa.select(key_check.c.token).where(key_check.c.id == 1)).scalar_one())


def _decrypts(box: SecretBox, token: bytes, expected: str | None = None) -> bool:
    try:
        plain = box.decrypt(token)
    except SecretError:
        return False
    return expected is None or plain == expected


def _mismatch(box: SecretBox, what: str) -> SecretKeyMismatch:
    return SecretKeyMismatch(
        f"the secret key from {box.source} cannot decrypt {what}: every instance sharing the database needs "
        f"the key the others use; set {KEY_ENVIRONMENT_VARIABLE} or storage.secret_key_file to it"
    )
