"""A real API server process for the CLI to talk to, with a tiny model already in its store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelrunner.core.store.store import ModelStore, StoredModel
from tests.gguf_factory import write_tiny_gguf

TINY = "ai/tiny:latest"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
    api = ApiProcess(process, host, models, log)
    base_url = "http://localhost" if unix_socket else host
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=base_url, transport=transport, timeout=1) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"the API exited early:\n{log.read_text()[-3000:]}")
            try:
                if http.get("/").status_code == 200:
                    return api
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    stop_api(api)
    raise AssertionError(f"the API did not answer within 30 s:\n{log.read_text()[-3000:]}")


def stop_api(api: ApiProcess) -> None:
    """SIGTERM (which stops its llama-servers), then SIGKILL if it lingers."""
    if api.process.poll() is None:
        api.process.send_signal(signal.SIGTERM)
        try:
            api.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            api.process.kill()
            api.process.wait()


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


@pytest.fixture
def tiny_model(tmp_path: Path, tiny_gguf: Path) -> StoredModel:
    """ai/tiny:latest, packaged into the store the `api` fixture serves."""
    return ModelStore(tmp_path / "models").package_gguf(tiny_gguf, TINY)


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiProcess]:
    """A running API; MODEL_RUNNER_HOST points the CLI at it."""
    server = start_api(tmp_path)
    monkeypatch.setenv("MODEL_RUNNER_HOST", server.host)
    try:
        yield server
    finally:
        stop_api(server)
