"""A real `modelrunner-tui --headless` process on a free loopback port, stopped after each test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.real_parts import REAL_CACHE_DIR, REAL_LLAMA_SERVER


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class HeadlessServer:
    """One running headless server process."""

    process: subprocess.Popen[bytes]
    url: str
    models_path: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def start_headless(tmp_path: Path, *, extra_env: dict[str, str] | None = None) -> HeadlessServer:
    """Start the console script as a user would, with the real cache (llama-server, SmolLM2)."""
    port = free_port()
    models = tmp_path / "models"
    env = dict(os.environ)
    env.update(
        {
            "MODEL_RUNNER_PORT": str(port),
            "MODELS_PATH": str(models),
            # the real cache holds the llama-server build and the default model's GGUF
            "XDG_CACHE_HOME": str(REAL_CACHE_DIR.parent),
            "MODELRUNNER_SEED_DEFAULT_MODEL": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra_env or {})
    log = tmp_path / "server.log"
    command = [sys.executable, "-X", "importtime", "-m", "modelrunner.tui.cli", "--headless"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    server = HeadlessServer(process, f"http://127.0.0.1:{port}", models, log, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited early:\n{server.stderr()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/models", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the server did not answer within 60 s:\n{server.stderr()[-3000:]}")


def stop(server: HeadlessServer) -> None:
    """SIGTERM, then SIGKILL if it does not go."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture
def headless(tmp_path: Path) -> Iterator[HeadlessServer]:
    """A headless server whose store gets the default model on first run."""
    if REAL_LLAMA_SERVER is None:
        pytest.skip("no llama-server: run `just setup`")
    server = start_headless(tmp_path)
    try:
        yield server
    finally:
        stop(server)
