"""Fixtures for the whole suite: a hermetic environment, tmp settings, and the real llama-server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrunner.core.settings import Settings
from tests.processes import ApiProcess, start_api, stop_api
from tests.real_parts import REAL_CACHE_DIR, REAL_LLAMA_SERVER

_ISOLATED_VARIABLES = (
    "MODEL_RUNNER_PORT", "MODEL_RUNNER_SOCK", "MODEL_RUNNER_HOST", "MODEL_RUNNER_BIND",
    "MODELS_PATH",
    "LLAMA_ARGS", "LLAMA_SERVER_VERSION", "DISABLE_SERVER_UPDATE", "DISABLE_METRICS",
    "MODEL_RUNNER_RUNTIME_MEMORY_CHECK", "DEBUG", "DO_NOT_TRACK", "MODELRUNNER_CONFIG",
    "MODEL_RUNNER_LOG_DIR",
)  # fmt: skip


@pytest.fixture(autouse=True)
def hermetic_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep every test away from the user's config, cache, store and servers.

    XDG dirs and MODEL_RUNNER_LOG_DIR point into a tmp dir; LLAMA_SERVER_PATH points at the real
    binary so nothing ever triggers a 5-minute build by accident; the default model is not seeded
    unless a test asks.
    """
    home = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    for variable in _ISOLATED_VARIABLES:
        os.environ.pop(variable, None)
    os.environ.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "MODELRUNNER_SEED_DEFAULT_MODEL": "0",
            "MODEL_RUNNER_LOG_DIR": str(home / "model-runner-logs"),
        }
    )
    if REAL_LLAMA_SERVER is not None:
        os.environ["LLAMA_SERVER_PATH"] = str(REAL_LLAMA_SERVER)
    else:
        os.environ.pop("LLAMA_SERVER_PATH", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on tmp dirs, with the real llama-server and no default-model seeding."""
    return Settings(
        models_path=tmp_path / "models",
        config_dir=tmp_path / "config",
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        log_dir=tmp_path / "logs",
        llama_server_path=REAL_LLAMA_SERVER,
        seed_default_model=False,
        port=0,
    )


@pytest.fixture(scope="session")
def llama_server() -> Path:
    """The real llama-server binary; tests needing it are skipped, with the reason, without it."""
    if REAL_LLAMA_SERVER is None:
        pytest.skip("no llama-server: run `just setup` to build it")
    return REAL_LLAMA_SERVER


@pytest.fixture(scope="session")
def default_model_gguf() -> Path:
    """SmolLM2's GGUF from the real cache (fetched by `just setup`)."""
    from modelrunner.core import wheel_models

    if not wheel_models.is_cached(wheel_models.SMOLLM2, REAL_CACHE_DIR):
        pytest.skip("the default model is not cached: run `just setup`")
    return wheel_models.cached_path(wheel_models.SMOLLM2, REAL_CACHE_DIR)


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    """Gemma 3 270M's GGUF from the real cache (fetched by `just setup`)."""
    from modelrunner.core import wheel_models

    if not wheel_models.is_cached(wheel_models.GEMMA3, REAL_CACHE_DIR):
        pytest.skip("Gemma 3 is not cached: run `just setup`")
    return wheel_models.cached_path(wheel_models.GEMMA3, REAL_CACHE_DIR)


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiProcess]:
    """A running API; MODEL_RUNNER_HOST points the CLI at it."""
    server = start_api(tmp_path)
    monkeypatch.setenv("MODEL_RUNNER_HOST", server.host)
    try:
        yield server
    finally:
        stop_api(server)
