"""Fixtures for the inference tests: settings on tmp_path, fake llama-servers, tiny GGUFs."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_fakes import FakeBundle, make_settings, write_executable

from modelrunner.core.inference.llama_build import LlamaServerBinary, resolve_llama_server
from modelrunner.core.settings import Settings

TESTS = Path(__file__).resolve().parents[1]
FAKE_SERVER = TESTS / "fakes" / "fake_llama_server.py"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def fake_llama_server(tmp_path: Path) -> Path:
    """An executable named llama-server that runs tests/fakes/fake_llama_server.py."""
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
    sys.path.insert(0, str(TESTS))
    try:
        from gguf_factory import write_tiny_gguf
    finally:
        sys.path.remove(str(TESTS))
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    return path


@pytest.fixture(scope="module")
def real_llama_server() -> LlamaServerBinary:
    """The real llama-server that the user's settings resolve to; skips if there is none."""
    try:
        found = resolve_llama_server(Settings.load())
    except Exception as error:  # a bad LLAMA_SERVER_PATH: say so rather than fail every test
        pytest.skip(f"no llama-server: {error}")
    if found is None:
        pytest.skip(
            "no llama-server binary (run `python -m modelrunner.core.inference.llama_build` "
            "or set LLAMA_SERVER_PATH)"
        )
    return found
