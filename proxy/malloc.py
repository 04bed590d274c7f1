"""Giving memory back to the system after a large answer (glibc's ``malloc_trim``).

A PROPFIND Depth 1 or a sync-collection of a calendar of 100,000 events makes its whole answer in memory
(Radicale's items, its ElementTree, then the bytes): a couple of hundred MB for a moment. CPython hands its own
small-object arenas back when they empty, but what it asked of glibc (anything over 512 bytes) stays in glibc's
arenas once freed — one arena per worker thread, and after the first large buffer glibc serves the next ones
from them instead of mapping them apart — so the server's RSS stayed near its largest answers. ``malloc_trim(0)``
returns the free pages of every arena. It takes a few milliseconds, so the engine calls it only after an
answer of :data:`LARGE_ANSWER` bytes or more, where the request itself took far longer. Elsewhere than glibc it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Answers from this size on are followed by a trim (a PROPFIND Depth 1 of about 5,000 items).
LARGE_ANSWER = 1024 * 1024


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def after_answer(size: int) -> bool:
    """Return freed memory to the system if an answer of ``size`` bytes was large; whether it did."""
    if size < LARGE_ANSWER or _TRIM is None:
        return False
    _TRIM(0)
    return True
