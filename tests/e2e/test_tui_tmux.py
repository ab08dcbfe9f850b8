"""The TUI in a real terminal (tmux): first run seeds SmolLM2, it answers, Ctrl+Q cleans up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.real_parts import REAL_CACHE_DIR

pytestmark = [pytest.mark.e2e, pytest.mark.llama, pytest.mark.default_model]


class Terminal:
    """A private tmux server running one command in a 120x36 window."""

    def __init__(self, socket_dir: Path) -> None:
        self.env = {**os.environ, "TMUX_TMPDIR": str(socket_dir)}
        self.env.pop("TMUX", None)

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", "modelrunner-test", *args],
            env=self.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        return result.stdout

    def start(self, command: str) -> None:
        self.tmux("new-session", "-d", "-s", "app", "-x", "120", "-y", "36", command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "app")

    def wait_for(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "app", *keys)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: run `just setup`")
    term = Terminal(tmp_path / "tmux")
    (tmp_path / "tmux").mkdir()
    try:
        yield term
    finally:
        term.tmux("kill-server")


def test_first_run_chat_and_quit(
    terminal: Terminal, tmp_path: Path, llama_server: Path, default_model_gguf: Path
) -> None:
    done = tmp_path / "exit-code"
    environment = {
        "MODELS_PATH": str(tmp_path / "models"),
        "XDG_CACHE_HOME": str(REAL_CACHE_DIR.parent),  # the real llama-server build and SmolLM2
        "MODELRUNNER_SEED_DEFAULT_MODEL": "1",
        "LLAMA_SERVER_PATH": str(llama_server),
        "TERM": "xterm-256color",
    }
    exports = " ".join(f"{key}={value}" for key, value in environment.items())
    terminal.start(f"env {exports} {sys.executable} -m modelrunner.tui.cli; echo $? > {done}")
    terminal.wait_for("smollm2:135M-Q4_1")
    terminal.wait_for("Message smollm2:135M-Q4_1")
    terminal.keys("What is the capital of France?", "Enter")
    screen = terminal.wait_for("Paris", timeout=120)
    assert "What is the capital of France?" in screen
    ours = str(tmp_path)  # this test's store: other llama-servers on the machine are not ours
    llama_servers = [
        process
        for process in psutil.process_iter(["name", "cmdline"])
        if process.info["name"] == "llama-server" and ours in " ".join(process.info["cmdline"])
    ]
    assert len(llama_servers) == 1
    terminal.keys("C-q")
    deadline = time.monotonic() + 30
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.read_text().strip() == "0"
    _gone, alive = psutil.wait_procs(llama_servers, timeout=10)
    assert alive == []
