"""Pure helpers: sizes, context lengths, names, and what the status line says about core news."""

from __future__ import annotations

import pytest

from modelrunner.core.events import (
    DefaultModelProgressed,
    EngineBuildProgressed,
    EngineReady,
    ModelsChanged,
    PreloadFailed,
)
from modelrunner.tui.formatting import (
    context_length,
    ellipsize,
    family_name,
    human_context,
    human_quantization,
    human_size,
    short_name,
)
from modelrunner.tui.messages import CoreStartFailed
from modelrunner.tui.news import NEWS_LINGER, StatusNews, status_news


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "—"),
        (0, "0 B"),
        (512, "512 B"),
        (483_744, "472 KiB"),
        (98_349_056, "93.8 MiB"),
        (1_319_413_953, "1.23 GiB"),
    ],
)
def test_human_size(size: int | None, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(
    ("tokens", "text"), [(None, "—"), (512, "512"), (8192, "8K"), (131072, "128K"), (1000, "1,000")]
)
def test_human_context(tokens: int | None, text: str) -> None:
    assert human_context(tokens) == text


def test_context_length_prefers_the_packaged_size() -> None:
    gguf = {"general.architecture": "llama", "llama.context_length": "8192"}
    assert context_length({"gguf": gguf}) == 8192
    assert context_length({"gguf": gguf, "context_size": 2048}) == 2048
    assert context_length({}) is None


def test_names() -> None:
    assert short_name("docker.io/ai/smollm2:135M-Q4_1") == "smollm2:135M-Q4_1"
    assert family_name("ai/smollm2:135M-Q4_1") == "smollm2"
    assert family_name("hf.co/org/model:Q4_K_M") == "hf.co/org/model"
    assert human_quantization({"quantization": "MOSTLY_Q4_1"}) == "Q4_1"
    assert ellipsize("abcdef", 4) == "abc…"
    assert ellipsize("abc", 4) == "abc"


def test_status_news() -> None:
    assert status_news(EngineBuildProgressed(41.6, "[ 41%]")) == StatusNews(
        "Building llama-server (first run only)… 42%", 41.6
    )
    ready = status_news(EngineReady("/x", "built", "b6000"))
    assert ready is not None
    assert ready.linger == NEWS_LINGER
    assert status_news(EngineReady("/x", "cache", "b6000")) is None
    failed = status_news(DefaultModelProgressed("ai/smollm2:135M-Q4_1", "x", True, "disk full"))
    assert failed == StatusNews("Could not import smollm2:135M-Q4_1: disk full", error=True)
    assert status_news(CoreStartFailed("store is damaged")) == StatusNews(
        "store is damaged", error=True
    )
    assert status_news(ModelsChanged()) is None
    preload = PreloadFailed("sha256:" + "a" * 64, "ai/smollm2:135M-Q4_1", "llama-server exited")
    assert status_news(preload) == StatusNews(
        "Could not load smollm2:135M-Q4_1: llama-server exited", error=True
    )
