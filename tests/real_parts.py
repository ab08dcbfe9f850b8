"""The real llama-server and model cache of this machine, found before tests isolate the env."""

from __future__ import annotations

import os
from pathlib import Path

from modelrunner.core.settings import Settings


def _find_real_llama_server() -> Path | None:
    """The llama-server a user of this machine would get, found before isolating the environment."""
    if path := os.environ.get("LLAMA_SERVER_PATH"):
        candidate = Path(path)
        candidate = candidate / "llama-server" if candidate.is_dir() else candidate
        return candidate if candidate.is_file() else None
    from modelrunner.core.inference.llama_build import resolve_llama_server

    binary = resolve_llama_server(Settings.load())
    return binary.path if binary is not None else None


REAL_LLAMA_SERVER = _find_real_llama_server()
"""Resolved once at collection, from the real user cache dir (`just setup` builds it there)."""

REAL_CACHE_DIR = Settings.load().cache_dir
"""The real user cache dir, where `just setup` puts the default model's GGUF."""
