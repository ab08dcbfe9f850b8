"""Fixtures for the inference tests: settings on tmp_path, fake llama-servers, tiny GGUFs."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from modelrunner.core.settings import Settings
from tests.gguf_factory import write_tiny_gguf
from tests.inference.engine_fakes import FakeBundle, make_settings, write_executable

TESTS = Path(__file__).resolve().parents[1]
FAKE_SERVER = TESTS / "fakes" / "fake_llama_server.py"


@pytest.fixture
def engine_settings(tmp_path: Path) -> Settings:
    """Settings on tmp_path with no LLAMA_SERVER_PATH (unlike the suite-wide `settings`)."""
    return make_settings(tmp_path)


@pytest.fixture
def fake_llama_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An executable named llama-server that runs tests/fakes/fake_llama_server.py.

    Unsandboxed: the fake is a Python program that needs the virtualenv and the test tree.
    """
    monkeypatch.setenv("MODELRUNNER_SANDBOX", "0")
    return write_executable(
        tmp_path / "fakebin" / "llama-server",
        f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SERVER}" "$@"\n',
    )


@pytest.fixture
def bundle(tmp_path: Path) -> FakeBundle:
    root = tmp_path / "bundle"
    (root / "model").mkdir(parents=True)
    gguf = root / "model" / "model.gguf"
    gguf.write_bytes(b"GGUF")
    return FakeBundle(root=root, gguf=gguf)


@pytest.fixture
def clean_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., None]:
    """Set PATH to the given directories plus the system ones (never a real llama-server)."""

    def set_path(*dirs: Path) -> None:
        system = [d for d in ("/usr/local/bin", "/usr/bin", "/bin") if Path(d).is_dir()]
        monkeypatch.setenv("PATH", os.pathsep.join([*map(str, dirs), *system]))

    return set_path


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    return path
