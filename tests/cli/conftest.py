"""A real API server process for the CLI to talk to, with a tiny model already in its store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelrunner.core.store.store import ModelStore, StoredModel
from tests.gguf_factory import write_tiny_gguf
from tests.processes import free_port, stop, wait_until_ready

TINY = "ai/tiny:latest"


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
