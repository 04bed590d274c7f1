"""Keeping what calrelay writes private to the user it runs as.

The data directory holds password hashes, the key that decrypts app-specific passwords, relay state and
calendar data; other local users must read none of it. The command line sets a process-wide umask of 077 at
start-up, so every file and folder calrelay or its libraries (Radicale, SQLite with its ``-wal``/``-shm``
files, the emulator, the recorder) create is private, whichever code path creates it. The helpers below
also tighten what an older calrelay left readable, for code that runs without the command line.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: Files 0600, folders 0700.
PRIVATE_UMASK = 0o077


def restrict_umask() -> None:
    """Make everything this process creates from now on private to its user (called by the CLI first)."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700, and take group and other access from an existing one."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # not ours to change: leave it, the files inside are private
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    return path


def private_files(*paths: Path) -> None:
    """Make each existing file 0600 (a file another process created without calrelay's umask)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
