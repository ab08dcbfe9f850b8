"""serve(): TCP and Unix-socket listeners, stale sockets, signals, a port in use."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from modelrunner.server.serve import bind_unix_socket
from tests.processes import free_port


def start(tmp_path: Path, **env: str) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "MODELS_PATH": str(tmp_path / "models"), **env}
    log = (tmp_path / "serve.log").open("wb")
    command = [sys.executable, "-m", "modelrunner.server.serve"]
    return subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)


def wait_until_answering(process: subprocess.Popen[bytes], client: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited early"
        try:
            if client.get("/").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("the server did not answer within 30 s")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_tcp_server_stops_cleanly_on_a_signal(tmp_path: Path, sig: int) -> None:
    port = free_port()
    process = start(tmp_path, MODEL_RUNNER_PORT=str(port))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            wait_until_answering(process, client)
            assert client.get("/models").json() == []
    finally:
        code = stop(process, sig)
    assert code == 0
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log


def test_unix_socket_server_replaces_a_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "run" / "mr.sock"
    path.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays behind, with nobody listening
    process = start(tmp_path, MODEL_RUNNER_SOCK=str(path))
    try:
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, base_url="http://localhost") as client:
            wait_until_answering(process, client)
            assert client.get("/").text == "Docker Model Runner is running"
        assert path.stat().st_mode & 0o077 == 0  # this user only
    finally:
        code = stop(process)
    assert code == 0
    assert not path.exists()


def test_a_live_socket_is_not_stolen(tmp_path: Path) -> None:
    path = tmp_path / "mr.sock"
    with bind_unix_socket(path):
        process = start(tmp_path, MODEL_RUNNER_SOCK=str(path))
        assert process.wait(timeout=30) == 1
    assert "in use" in (tmp_path / "serve.log").read_text()


def test_a_port_in_use_is_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(tmp_path, MODEL_RUNNER_PORT=str(port))
        assert process.wait(timeout=30) == 1
