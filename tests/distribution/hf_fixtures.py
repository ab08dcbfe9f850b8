"""The fake Hugging Face hub as a test fixture: tmp repositories, free loopback ports, HF_* env.

Tests write repositories under `hub.root/<org>/<repo>/` first, then `hub.start(...)` (the fake
scans them once at start-up). The fixture points HF_ENDPOINT, HF_HOME and HF_TOKEN at it for the
test and stops every server it started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FAKE_HUB = Path(__file__).resolve().parent.parent / "fakes" / "fake_hf_hub.py"


@dataclass
class FakeHub:
    """A fake hub's repository root and, once started, its endpoint."""

    root: Path
    home: Path
    monkeypatch: pytest.MonkeyPatch
    endpoint: str = ""
    commits: dict[str, str] = field(default_factory=dict)
    _processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def repo(self, repo_id: str) -> Path:
        """The directory of a repository (created) to write its files into."""
        path = self.root.joinpath(*repo_id.split("/"))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(
        self,
        *,
        token: str | None = None,
        client_token: str | None = None,
        throttle: float = 0,
        fail_once_after: int = 0,
        separate_cdn: bool = True,
    ) -> str:
        """Start the fake over the repositories written so far; returns its endpoint.

        `token` makes every repository gated; `client_token` becomes HF_TOKEN (unset if None).
        """
        self.stop()
        argv = [sys.executable, str(FAKE_HUB), "--root", str(self.root), "--port", "0"]
        argv += ["--cdn-port", "-1" if separate_cdn else "0"]
        if token:
            argv += ["--token", token]
        if throttle:
            argv += ["--throttle", str(throttle)]
        if fail_once_after:
            argv += ["--fail-once-after", str(fail_once_after)]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self._processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake hub exited with {process.wait(5)}")
        started = json.loads(line)
        self.endpoint = started["endpoint"]
        self.commits = started["repos"]
        self.monkeypatch.setenv("HF_ENDPOINT", self.endpoint)
        if client_token is None:
            self.monkeypatch.delenv("HF_TOKEN", raising=False)
        else:
            self.monkeypatch.setenv("HF_TOKEN", client_token)
        return self.endpoint

    def requests(self) -> list[dict[str, Any]]:
        """The fake's request log: method, path, range, auth, port."""
        with urllib.request.urlopen(f"{self.endpoint}/_requests", timeout=10) as response:
            log: list[dict[str, Any]] = json.load(response)
        return [entry for entry in log if entry["path"] != "/_requests"]

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            if process.stdout is not None:
                process.stdout.close()
        self._processes.clear()


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A fake hub with an empty repository root; the test writes repositories, then starts it."""
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "5")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub = FakeHub(root=tmp_path / "hf-repos", home=home, monkeypatch=monkeypatch)
    hub.root.mkdir()
    try:
        yield hub
    finally:
        hub.stop()
