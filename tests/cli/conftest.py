"""A real API server process for the CLI to talk to, with a tiny model already in its store."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrunner.core.store.store import ModelStore, StoredModel
from tests.gguf_factory import write_tiny_gguf

TINY = "ai/tiny:latest"


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


@pytest.fixture
def tiny_model(tmp_path: Path, tiny_gguf: Path) -> StoredModel:
    """ai/tiny:latest, packaged into the store the `api` fixture serves."""
    return ModelStore(tmp_path / "models").package_gguf(tiny_gguf, TINY)
