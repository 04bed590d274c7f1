"""Regenerate ``tests/recordings/crm-session.har``: the CRM session of ``crm_session`` recorded against a
fresh calrelay with the test users. Run from the repository root::

    python -m tests.recorder.make_example

The service account's password is redacted by the recorder; the test users are throwaway accounts anyway.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from proxy.recorder import RECORDING
from tests.conftest import running_calrelay
from tests.recorder import crm_session
from tests.recorder.test_end_to_end import SERVICE

EXAMPLE = Path(__file__).parent.parent / "recordings" / "crm-session.har"


def main() -> None:
    overrides = {"recorder": {"path": str(EXAMPLE)}}  # as `serve --record` does
    with tempfile.TemporaryDirectory() as data, running_calrelay(Path(data), overrides=overrides) as server:
        crm_session.run(server.url, SERVICE, server.password(SERVICE), "alice")
        server.run(server.app[RECORDING].stop())
    print(f"wrote {EXAMPLE}")


if __name__ == "__main__":
    main()
