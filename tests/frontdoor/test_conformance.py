"""Conformance: caldav-server-tester rates calrelay at least as well as a plain Radicale 3.9.

A standalone Radicale 3.9 gets 86 of 101 features "full" from caldav-server-tester 1.7 (measured with
``caldav-server-tester --verbose`` against ``python -m radicale`` with ``auth type = none``); calrelay
embeds that engine, so anything less is a regression of the front door or the plugins.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

PLAIN_RADICALE_FULL = 86


def test_caldav_server_tester_finds_at_least_plain_radicale_support(calrelay):
    tester = shutil.which("caldav-server-tester") or str(Path(sys.executable).parent / "caldav-server-tester")
    result = subprocess.run(
        [tester, "--verbose", "--caldav-url", calrelay.url, "--caldav-username", "alice",
         "--caldav-password", calrelay.password("alice")],
        capture_output=True, text=True, timeout=300,
    )
    levels = re.findall(r"^Feature support level found: (\S+)", result.stdout, re.MULTILINE)
    assert len(levels) >= 100, result.stdout[-2000:] + result.stderr[-2000:]
    full = levels.count("full")
    assert full >= PLAIN_RADICALE_FULL, f"only {full} of {len(levels)} features fully supported:\n{result.stdout}"
