"""Servers the tests run as real processes: free loopback ports, waiting for them, stopping them."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    log: Path,
    *,
    what: str = "the server",
    timeout: float = 60,
) -> None:
    """Poll `ready()` until it is true; fail with the log's tail if the process dies or times out.

    `ready` may raise transport errors while the server starts; they count as "not yet".
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{what} exited early:\n{tail}")
        try:
            if ready():
                return
        except Exception:
            pass
        time.sleep(0.05)
    stop(process)
    raise AssertionError(
        f"{what} did not answer within {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}"
    )


def stop(process: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM (a server then stops its llama-servers), and SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
