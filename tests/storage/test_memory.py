"""After a large answer the engine hands freed memory back to the system (proxy.malloc)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy import malloc

MB = 1024 * 1024


def rss_mb() -> float:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024


@pytest.mark.skipif(malloc._TRIM is None or not Path("/proc/self/status").exists(), reason="needs glibc and /proc")
def test_memory_freed_inside_glibcs_heap_goes_back_after_a_large_answer_only() -> None:
    # What a large answer leaves behind: many freed blocks of a few kB (glibc's, not CPython's small-object
    # allocator's), below something still in use, so that glibc cannot simply shrink its heap from the top.
    blocks = [bytes(4000) + bytes([n % 256]) for n in range(16_000)]
    pinned = bytes(4000) + b"pinned"
    del blocks
    before = rss_mb()
    assert malloc.after_answer(malloc.LARGE_ANSWER - 1) is False
    assert rss_mb() > before - 16
    assert malloc.after_answer(malloc.LARGE_ANSWER) is True
    assert rss_mb() < before - 32, "about 64 MB were freed; at least half of it must be back with the system"
    assert pinned.endswith(b"pinned")
