"""A shutdown ends within ``[server] shutdown_timeout`` whatever still runs (issue 13): the engine's busy calls
are waited for only until then, and ``calrelay serve`` ends its process at that deadline."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

from proxy.keys import ENGINE


def test_drain_waits_for_busy_engine_calls_only_until_its_timeout(calrelay):
    engine = calrelay.app[ENGINE]
    release = threading.Event()

    async def scenario() -> tuple[int, int]:
        busy = asyncio.ensure_future(engine.call(release.wait, 30))
        await asyncio.sleep(0.05)
        still_busy = await engine.drain(0.2)
        release.set()
        await busy
        return still_busy, await engine.drain(5)

    assert calrelay.run(scenario()) == (1, 0)


SERVER = textwrap.dedent("""
    import asyncio, socket, sys
    from aiohttp import web
    from proxy.serve import _exit_by_deadline

    async def stuck(app):  # a cleanup that never ends, as a write or a database call past the deadline would
        await asyncio.sleep(3600)

    app = web.Application()
    app.on_shutdown.append(_exit_by_deadline(0.5))
    app.on_cleanup.append(stuck)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    web.run_app(app, sock=sock, print=None)
""")


def serving(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_the_process_ends_at_the_shutdown_deadline_whatever_still_runs():
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        deadline = time.monotonic() + 30
        while not serving(port):  # until then, SIGTERM would end it before its handlers are installed
            assert time.monotonic() < deadline and process.poll() is None, process.stderr
            time.sleep(0.05)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 1  # not the 3,600 s its cleanup asks for
        assert time.monotonic() - started < 10
        assert "took longer than [server] shutdown_timeout" in process.stderr.read()
    finally:
        process.kill()
