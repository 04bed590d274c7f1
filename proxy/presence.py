"""Whether a ``calrelay serve`` is running on a data directory, for commands that need one.

The server writes its process id to ``<data_dir>/serve.pid`` while it runs; ``calrelay sync --now`` reads it to
say at once that no server is running instead of waiting for a pull that will never come. A file left behind
by a killed server names a process that no longer exists, which counts as not running.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

FILE_NAME = "serve.pid"


def _path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def server_running(data_dir: Path) -> bool:
    try:
        pid = int(_path(data_dir).read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


@contextlib.asynccontextmanager
async def announced(data_dir: Path) -> AsyncIterator[None]:
    """Mark ``data_dir`` as served by this process for as long as the context lasts."""
    path = _path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text().strip() == str(os.getpid()):  # not another server's, started since
                path.unlink()
