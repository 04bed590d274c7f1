"""Encryption at rest for upstream secrets (iCloud app-specific passwords).

Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography``. The key comes from the environment variable
``CALRELAY_SECRET_KEY`` when set (so it can live outside the data directory, e.g. in a secret store), else
from ``<data_dir>/secret.key``, created with mode 0600 on first use. Losing the key means re-linking.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

logger = logging.getLogger(__name__)

KEY_ENVIRONMENT_VARIABLE = "CALRELAY_SECRET_KEY"


class SecretError(Exception):
    """A secret cannot be decrypted (wrong or lost key)."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SecretBox:
        from_environment = os.environ.get(KEY_ENVIRONMENT_VARIABLE)
        if from_environment:
            try:
                return cls(from_environment.encode())
            except ValueError:
                raise SecretError(
                    f"{KEY_ENVIRONMENT_VARIABLE} is not a Fernet key (32 url-safe base64-encoded bytes); create one "
                    "with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
                ) from None
        return cls(_key_file(data_dir / "secret.key"))

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
