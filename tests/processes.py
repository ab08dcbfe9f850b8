"""Servers the tests run as real processes: free loopback ports, waiting for them, stopping them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx


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


@dataclass
class ApiProcess:
    """One `python -m modelrunner.server.serve` process."""

    process: subprocess.Popen[bytes]
    host: str
    """What MODEL_RUNNER_HOST would be: http://127.0.0.1:<port> or unix:///path."""
    models_path: Path
    log: Path


def start_api(tmp_path: Path, *, unix_socket: Path | None = None) -> ApiProcess:
    """Start the API on a free loopback port (or a Unix socket) and wait until it answers."""
    models = tmp_path / "models"
    env = {**os.environ, "MODELS_PATH": str(models), "PYTHONUNBUFFERED": "1"}
    if unix_socket is None:
        port = free_port()
        env["MODEL_RUNNER_PORT"] = str(port)
        host, transport = f"http://127.0.0.1:{port}", None
    else:
        env["MODEL_RUNNER_SOCK"] = str(unix_socket)
        host, transport = f"unix://{unix_socket}", httpx.HTTPTransport(uds=str(unix_socket))
    log = tmp_path / "api.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelrunner.server.serve"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base_url = "http://localhost" if unix_socket else host
    with httpx.Client(base_url=base_url, transport=transport, timeout=1) as http:
        wait_until_ready(process, lambda: http.get("/").status_code == 200, log, what="the API")
    return ApiProcess(process, host, models, log)


def stop_api(api: ApiProcess) -> None:
    """Stop the API process (and with it its llama-servers)."""
    stop(api.process)
