"""The ModelRunner facade: store operations, events, default-model seeding, and chat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelrunner.core.errors import Conflict, InvalidReference, ModelNotFound
from modelrunner.core.events import DefaultModelProgressed, Event, ModelsChanged
from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from tests.gguf_factory import write_tiny_gguf
from tests.real_parts import REAL_CACHE_DIR


@pytest.fixture
async def runner(settings: Settings) -> AsyncIterator[ModelRunner]:
    model_runner = ModelRunner(settings)
    await model_runner.start()
    try:
        yield model_runner
    finally:
        await model_runner.stop()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


async def _collect(events: AsyncIterator[Event], count: int) -> list[Event]:
    """The first `count` store events (the start-up's EngineReady and the like are skipped)."""
    seen: list[Event] = []
    async for event in events:
        if not isinstance(event, ModelsChanged):
            continue
        seen.append(event)
        if len(seen) == count:
            break
    return seen


async def test_package_tag_find_and_remove(runner: ModelRunner, tiny: Path) -> None:
    model = await runner.package_model(tiny, "tiny")
    assert model.tags == ("docker.io/ai/tiny:latest",)
    assert await runner.tag_model("tiny", "team/tiny:v2") == "docker.io/team/tiny:v2"
    assert (await runner.get_model("ai/tiny:latest")).id == model.id
    assert (await runner.get_model(model.id[7:19])).id == model.id
    # DMR's partial-name fallback, only where a plain lookup misses
    assert (await runner.find_model("tiny:v2")).id == model.id
    with pytest.raises(Conflict):
        await runner.remove_model(model.id)
    assert await runner.remove_model("team/tiny:v2") == [{"Untagged": "docker.io/team/tiny:v2"}]
    assert await runner.remove_model("tiny") == [
        {"Untagged": "docker.io/ai/tiny:latest"},
        {"Deleted": model.id},
    ]
    assert await runner.list_models() == []
    with pytest.raises(ModelNotFound):
        await runner.get_model("tiny")


async def test_bad_names_are_rejected_before_touching_the_store(
    runner: ModelRunner, tiny: Path
) -> None:
    with pytest.raises(InvalidReference):
        await runner.package_model(tiny, "Not Valid")
    with pytest.raises(InvalidReference):
        await runner.get_model("ai/../x")
    assert await runner.list_models() == []


async def test_store_changes_are_announced(runner: ModelRunner, tiny: Path) -> None:
    events = runner.subscribe()
    waiter = asyncio.create_task(_collect(events, 2))
    await asyncio.sleep(0)  # let the subscription start before publishing
    await runner.package_model(tiny, "tiny")
    await runner.tag_model("tiny", "tiny:v2")
    assert await asyncio.wait_for(waiter, 10) == [ModelsChanged(), ModelsChanged()]


async def test_an_empty_store_gets_the_default_model(settings: Settings) -> None:
    from modelrunner.core import wheel_models

    if not wheel_models.is_cached(wheel_models.SMOLLM2, REAL_CACHE_DIR):
        pytest.skip("the default model is not cached: run `just setup`")
    runner = ModelRunner(settings.with_changes(cache_dir=REAL_CACHE_DIR, seed_default_model=True))
    events = runner.subscribe()
    progress: list[DefaultModelProgressed] = []

    async def watch() -> None:
        async for event in events:
            if isinstance(event, DefaultModelProgressed):
                progress.append(event)
                if event.done:
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await runner.start()
    try:
        await asyncio.wait_for(watcher, 120)
        models = await runner.list_models()
        assert [m.tags for m in models] == [("docker.io/ai/smollm2:135M-Q4_1",)]
        assert progress[-1].error is None
        assert models[0].config["quantization"] == "MOSTLY_Q4_1"
        assert models[0].config["architecture"] == "llama"
        # a store that has models is left alone
        assert await runner.ensure_default_model() is None
    finally:
        await runner.stop()


@pytest.mark.llama
async def test_chat_streams_deltas_from_a_real_llama_server(
    runner: ModelRunner, tiny: Path, llama_server: Path
) -> None:
    await runner.package_model(tiny, "tiny")
    question = [{"role": "user", "content": "hi"}]
    deltas = [delta async for delta in runner.chat("tiny", question, max_tokens=8)]
    assert deltas
    assert all(isinstance(delta, str) for delta in deltas)
    [info] = runner.running()
    assert info.state == "idle"  # loaded, no request in flight
    assert await runner.unload(["tiny"]) == 1
    assert runner.running() == []


@pytest.mark.llama
@pytest.mark.default_model
async def test_the_default_model_answers_the_capital_of_france(
    settings: Settings, default_model_gguf: Path, llama_server: Path
) -> None:
    runner = ModelRunner(settings)
    await runner.start()
    try:
        await runner.package_model(default_model_gguf, "ai/smollm2:135M-Q4_1")
        question = [{"role": "user", "content": "What is the capital of France?"}]
        chat = runner.chat("smollm2:135M-Q4_1", question, temperature=0, max_tokens=30)
        answer = "".join([delta async for delta in chat])
        assert "Paris" in answer
    finally:
        await runner.stop()


async def test_removing_a_loaded_model_stops_its_runner(
    runner: ModelRunner, tiny: Path, llama_server: Path
) -> None:
    await runner.package_model(tiny, "tiny")
    await runner.pool.acquire("tiny")
    assert len(runner.running()) == 1
    await runner.remove_model("tiny")
    assert runner.running() == []


async def test_requests_after_a_streamed_answer_still_get_through(
    runner: ModelRunner, tiny: Path, llama_server: Path
) -> None:
    """llama-server closes its end after every SSE answer; a pooled dead connection must not
    turn the next request into an error."""
    await runner.package_model(tiny, "tiny")
    for i in range(6):
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2, "stream": i % 2 == 0}  # fmt: skip
        response = await runner.forward(
            "tiny", "/v1/chat/completions", json.dumps(body).encode(), {}
        )
        try:
            assert response.status == 200, await response.read()
            await response.read()
        finally:
            await response.aclose()
