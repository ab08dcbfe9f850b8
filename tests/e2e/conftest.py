"""A real `modelrunner-tui --headless` process on a free loopback port, stopped after each test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.processes import free_port, stop, wait_until_ready
from tests.real_parts import REAL_CACHE_DIR, REAL_LLAMA_SERVER


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
    answers = lambda: httpx.get(f"{server.url}/models", timeout=1).status_code == 200  # noqa: E731
    wait_until_ready(process, answers, log, what="the headless server")
    return server


@pytest.fixture
def headless(tmp_path: Path) -> Iterator[HeadlessServer]:
    """A headless server whose store gets the default model on first run."""
    if REAL_LLAMA_SERVER is None:
        pytest.skip("no llama-server: run `just setup`")
    server = start_headless(tmp_path)
    try:
        yield server
    finally:
        stop(server.process)
