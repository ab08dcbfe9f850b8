"""The scheduler with the two real models: SmolLM2 135M and Gemma 3 270M, in real llama-servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings

pytestmark = [pytest.mark.llama, pytest.mark.default_model]

SMOLLM2 = "ai/smollm2:135M-Q4_1"
GEMMA3 = "ai/gemma3:270M-Q4_K_M"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


async def _answer(runner: ModelRunner, model: str) -> str:
    return "".join([delta async for delta in runner.chat(model, QUESTION, max_tokens=12)])


@pytest.fixture
async def two_models(
    settings: Settings, default_model_gguf: Path, gemma3_gguf: Path, llama_server: Path
) -> AsyncIterator[ModelRunner]:
    runner = ModelRunner(settings.with_changes(max_runners=2))
    await runner.start()
    await runner.package_model(default_model_gguf, SMOLLM2)
    await runner.package_model(gemma3_gguf, GEMMA3)
    try:
        yield runner
    finally:
        await runner.stop()


async def test_both_run_at_once_within_the_limit(two_models: ModelRunner) -> None:
    assert "Paris" in await _answer(two_models, SMOLLM2)
    assert await _answer(two_models, GEMMA3)
    states = {info.reference: info.state for info in two_models.running()}
    assert states == {SMOLLM2: "idle", GEMMA3: "idle"}


async def test_at_the_limit_the_idle_one_makes_room_as_the_preview_said(
    two_models: ModelRunner,
) -> None:
    two_models.pool.scheduler.max_runners = 1
    assert await _answer(two_models, SMOLLM2)
    preview = await two_models.preview(GEMMA3)
    assert preview.evict == (SMOLLM2,)  # runners go by their model's name
    assert "smollm2" in preview.message
    assert await _answer(two_models, GEMMA3)
    assert [info.reference for info in two_models.running()] == [GEMMA3]
