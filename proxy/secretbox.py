"""Encryption at rest for upstream secrets (iCloud app-specific passwords).

Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography``. The key comes from the environment variable
``CALRELAY_SECRET_KEY`` when set (so it can live outside the data directory, e.g. in a secret store), else
from ``[storage] secret_key_file``, else from ``<data_dir>/secret.key``, created with mode 0600 on first use
(a configured file is never created: it is meant to hold the key the other instances have). Every instance
sharing a database needs the same key; :mod:`proxy.key_check` refuses to start one that has another.
Losing the key means re-linking.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from proxy.config import Settings

logger = logging.getLogger(__name__)

KEY_ENVIRONMENT_VARIABLE = "CALRELAY_SECRET_KEY"


class SecretError(Exception):
    """A secret cannot be decrypted (wrong or lost key)."""


class SecretBox:
    def __init__(self, key: bytes, source: str = "") -> None:
        self._fernet = Fernet(key)
        #: Where the key came from, for messages (never the key itself).
        self.source = source

    @classmethod
    def for_settings(cls, settings: Settings) -> SecretBox:
        """The key of ``CALRELAY_SECRET_KEY``, else of ``[storage] secret_key_file``, else ``<data_dir>/secret.key``."""
        if os.environ.get(KEY_ENVIRONMENT_VARIABLE) or settings.storage.secret_key_file is None:
            return cls.for_data_dir(settings.storage.data_dir)
        path = settings.storage.secret_key_file
        try:
            key = path.read_bytes().strip()
        except OSError as error:
            raise SecretError(
                f"storage.secret_key_file {path} cannot be read ({error.strerror}): put the key every instance "
                f"uses there, or set {KEY_ENVIRONMENT_VARIABLE}"
            ) from None
        try:
            return cls(key, f"the key file {path}")
        except ValueError:
            raise SecretError(f"storage.secret_key_file {path} does not hold a Fernet key (32 url-safe "
                              "base64-encoded bytes on one line)") from None

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SecretBox:
        from_environment = os.environ.get(KEY_ENVIRONMENT_VARIABLE)
        if from_environment:
            try:
                return cls(from_environment.encode(), KEY_ENVIRONMENT_VARIABLE)
            except ValueError:
                raise SecretError(
                    f"{KEY_ENVIRONMENT_VARIABLE} is not a Fernet key (32 url-safe base64-encoded bytes); create one "
                    "with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
                ) from None
        return cls(_key_file(data_dir / "secret.key"), f"the key file {data_dir / 'secret.key'}")

    def encrypt(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise SecretError(
                "a stored iCloud password cannot be decrypted with the current key "
                f"({KEY_ENVIRONMENT_VARIABLE} or secret.key changed?); link the account again"
            ) from None


def _key_file(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as file:
        file.write(key)
    logger.info("created the secret key %s (mode 0600); back it up with the data directory", path)
    return key
