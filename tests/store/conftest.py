"""Fixtures for store tests: a store on tmp_path, tiny GGUFs and UTC local time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrunner.core.store.store import ModelStore
from tests.gguf_factory import write_sharded_gguf, write_tiny_gguf


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with TZ=UTC so local-time mtimes render with a `Z` like the reference examples."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "src" / "tiny.gguf", name="tiny")


@pytest.fixture
def other_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "src" / "other.gguf", name="other", seed=1)


@pytest.fixture
def sharded_gguf(tmp_path: Path) -> list[Path]:
    (tmp_path / "shards").mkdir()
    return write_sharded_gguf(tmp_path / "shards" / "split.gguf", shards=2)


@pytest.fixture(autouse=True)
def _source_dir(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir(exist_ok=True)
