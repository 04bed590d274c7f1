"""Turning the common command-line options into settings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from proxy import config


def settings_from_args(args: argparse.Namespace, **server: Any) -> config.Settings:
    """Settings from ``--config``, with ``--data`` and the given [server] keys overriding the file."""
    overrides: dict[str, dict[str, Any]] = {"server": server}
    if getattr(args, "data", None):
        overrides["storage"] = {"data_dir": str(Path(args.data).resolve())}
    return config.load(Path(args.config) if args.config else None, overrides)
