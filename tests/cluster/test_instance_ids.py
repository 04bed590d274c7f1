"""Which instance ids name a dead process of this host (whose leases a restarted instance takes at once)."""

from __future__ import annotations

import socket
import subprocess
import sys

from proxy.relay.supervisor import dead_here, new_instance_id


def test_only_a_process_of_this_host_that_is_gone_counts_as_dead() -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    host = socket.gethostname()
    assert dead_here(f"{host}-{gone.stdout.strip()}-ab12")
    assert not dead_here(new_instance_id())  # this very process
    assert not dead_here(f"{host}-1-ab12")  # running (pid 1), whoever owns it
    assert not dead_here(f"another-{host}-{gone.stdout.strip()}-ab12")  # another host: cannot tell
    assert not dead_here("not-an-instance-id")
