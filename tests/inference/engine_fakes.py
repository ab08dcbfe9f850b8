"""Plain test doubles for the inference tests: a bundle, settings on a temp dir, executables."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from modelrunner.core.errors import ModelNotFound
from modelrunner.core.settings import Settings


@dataclass(frozen=True)
class FakeBundle:
    """What core.store's Bundle offers, for argv and supervision tests."""

    root: Path
    gguf: Path
    mmproj: Path | None = None
    chat_template: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    """Settings whose every directory lives under tmp_path."""
    base = Settings(
        models_path=tmp_path / "models",
        config_dir=tmp_path / "config",
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        seed_default_model=False,
    )
    return base.with_changes(**changes)


def write_executable(path: Path, script: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(0o755)
    return path


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll `predicate` until it holds; fail the test if it does not within `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


def process_gone(pid: int) -> bool:
    """True once `pid` no longer runs (a zombie left for init to reap counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass(frozen=True)
class FakeModel:
    id: str
    tags: tuple[str, ...] = ()


class FakeStore:
    """A store of fake bundles: several references may name one model ID."""

    def __init__(self) -> None:
        self.models: dict[str, tuple[str, FakeBundle]] = {}
        self.bundle_calls = 0

    def add(self, model_id: str, bundle: FakeBundle, *references: str) -> None:
        for reference in (model_id, *references):
            self.models[reference] = (model_id, bundle)

    def get(self, reference: str) -> FakeModel:
        if reference not in self.models:
            raise ModelNotFound(f"model {reference} not found")
        model_id = self.models[reference][0]
        tags = tuple(r for r, (i, _) in self.models.items() if i == model_id and r != model_id)
        return FakeModel(model_id, tags)

    def find(self, reference: str) -> FakeModel:
        return self.get(reference)

    def bundle(self, reference: str) -> FakeBundle:
        self.bundle_calls += 1
        return self.models[reference][1]
