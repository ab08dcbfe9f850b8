"""Ollama's API through the real `ollama` SDK, against uvicorn and llama-server with SmolLM2."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.store import StoredModel

pytestmark = pytest.mark.llama

SMOLLM2 = "ai/smollm2:135M-Q4_1"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture
async def smollm2(runner: ModelRunner, default_model_gguf: Path, llama_server: Path) -> StoredModel:
    """The default model (SmolLM2 135M), stored as ai/smollm2:135M-Q4_1."""
    return await runner.package_model(default_model_gguf, SMOLLM2)


@pytest.fixture
async def sdk(live_url: str) -> AsyncIterator[ollama.AsyncClient]:
    """The ollama SDK's async client, pointed at our server."""
    sdk = ollama.AsyncClient(host=live_url)
    yield sdk
    await sdk.close()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated


async def test_version_and_tags(
    sdk: ollama.AsyncClient, live_url: str, smollm2: StoredModel
) -> None:
    async with httpx.AsyncClient(base_url=live_url) as http:
        version = (await http.get("/api/version")).json()["version"]
    assert tuple(int(part) for part in version.split(".")) >= (0, 9, 0)
    [listed] = (await sdk.list()).models
    assert listed.model == "smollm2:135M-Q4_1"
    assert listed.size == smollm2.size_bytes > 90_000_000
    assert listed.digest == smollm2.id.removeprefix("sha256:")
    assert listed.modified_at == datetime.fromtimestamp(smollm2.created, UTC)
    assert listed.details is not None
    assert listed.details.format == "gguf"
    assert listed.details.family == "llama"
    assert listed.details.families == ["llama"]
    assert listed.details.parameter_size == "134.52M"
    assert listed.details.quantization_level == "Q4_1"


async def test_show_reads_the_gguf(sdk: ollama.AsyncClient, smollm2: StoredModel) -> None:
    shown = await sdk.show("smollm2")
    assert shown.modelinfo is not None
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 8192
    assert shown.modelinfo["llama.embedding_length"] == 576
    assert 134_000_000 < shown.modelinfo["general.parameter_count"] < 136_000_000
    assert shown.template is not None
    assert "<|im_start|>" in shown.template
    assert shown.capabilities == ["completion"]
    assert shown.details is not None
    assert shown.details.quantization_level == "Q4_1"


async def test_chat_without_streaming(sdk: ollama.AsyncClient, smollm2: StoredModel) -> None:
    answer = await sdk.chat("smollm2", messages=QUESTION, options=GREEDY)
    assert answer.model == "smollm2"
    assert answer.done is True
    assert answer.message.role == "assistant"
    assert "Paris" in (answer.message.content or "")
    assert answer.done_reason == "stop"
    assert answer.prompt_eval_count is not None
    assert answer.prompt_eval_count > 10
    assert answer.eval_count is not None
    assert 0 < answer.eval_count <= 24
    assert answer.eval_duration is not None
    assert answer.eval_duration > 0
    assert answer.total_duration is not None
    assert answer.load_duration is not None
    assert answer.total_duration >= answer.eval_duration + answer.load_duration > 0


async def test_chat_streams_ndjson(
    sdk: ollama.AsyncClient, live_url: str, smollm2: StoredModel
) -> None:
    parts = [
        part
        async for part in await sdk.chat(
            "smollm2:135M-Q4_1", messages=QUESTION, options=GREEDY, stream=True
        )
    ]
    *deltas, last = parts
    assert len(deltas) >= 2
    assert not any(part.done for part in deltas)
    assert "Paris" in "".join(part.message.content or "" for part in deltas)
    assert last.done is True
    assert last.done_reason == "stop"
    assert last.message.content == ""
    assert last.eval_count in (len(deltas), len(deltas) + 1)  # + the end-of-text token
    async with (
        httpx.AsyncClient(base_url=live_url) as http,
        http.stream("POST", "/api/chat", json={"model": "smollm2", "messages": QUESTION}) as raw,
    ):
        assert raw.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) async for line in raw.aiter_lines() if line]
    assert lines[-1]["done"] is True


async def test_generate_stops_at_num_predict(sdk: ollama.AsyncClient, smollm2: StoredModel) -> None:
    answer = await sdk.generate(
        "smollm2", prompt="Count from one to twenty.", options={"temperature": 0, "num_predict": 5}
    )
    assert answer.done_reason == "length"
    assert answer.eval_count == 5
    assert answer.response
    streamed = [
        part.response
        async for part in await sdk.generate(
            "smollm2",
            prompt="Count from one to twenty.",
            options={"temperature": 0, "num_predict": 5},
            stream=True,
        )
    ]
    assert (
        "".join(part or "" for part in streamed) == answer.response
    )  # greedy: the same five tokens


async def test_format_json_gives_json(sdk: ollama.AsyncClient, smollm2: StoredModel) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    answer = await sdk.generate(
        "smollm2",
        prompt="Which city is the capital of France? Reply in JSON.",
        format=schema,
        options={"temperature": 0, "num_predict": 40},
    )
    assert isinstance(json.loads(answer.response or "")["city"], str)
    answer = await sdk.generate(
        "smollm2",
        prompt="What is the capital of France? Answer in JSON.",
        format="json",
        options={"temperature": 0, "num_predict": 100},
    )
    assert answer.done_reason == "stop"
    assert "Paris" in json.loads(answer.response or "").values()


async def test_ps_shows_keep_alive(
    sdk: ollama.AsyncClient, runner: ModelRunner, smollm2: StoredModel
) -> None:
    await sdk.chat("smollm2", messages=QUESTION, options=GREEDY, keep_alive="10m")
    [loaded] = (await sdk.ps()).models
    assert loaded.model == loaded.name == "smollm2:135M-Q4_1"
    assert loaded.digest == smollm2.id.removeprefix("sha256:")
    assert loaded.size is not None
    assert loaded.size > smollm2.size_bytes
    assert loaded.size_vram == 0
    assert loaded.context_length == 8192
    assert loaded.expires_at is not None
    left = loaded.expires_at - datetime.now(UTC)
    assert timedelta(minutes=9) < left <= timedelta(minutes=10)


async def test_empty_generate_loads_and_keep_alive_zero_unloads(
    sdk: ollama.AsyncClient, runner: ModelRunner, smollm2: StoredModel
) -> None:
    loaded = await sdk.generate("smollm2", keep_alive=-1)
    assert loaded.done is True
    assert loaded.done_reason == "load"
    assert loaded.response == ""
    [info] = runner.running()
    assert info.state == "idle"
    assert info.keep_alive is not None
    assert info.keep_alive < 0
    unloaded = await sdk.generate("smollm2", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert runner.running() == []
    chat_loaded = await sdk.chat("smollm2", messages=[])
    assert chat_loaded.done_reason == "load"
    assert chat_loaded.message.content == ""
    assert len(runner.running()) == 1


async def test_keep_alive_zero_on_a_chat_unloads_after_it(
    sdk: ollama.AsyncClient, runner: ModelRunner, smollm2: StoredModel
) -> None:
    answer = await sdk.chat("smollm2", messages=QUESTION, options=GREEDY, keep_alive=0)
    assert "Paris" in (answer.message.content or "")
    for _ in range(200):
        if not runner.running():
            break
        await asyncio.sleep(0.05)
    assert runner.running() == []


async def test_num_ctx_reconfigures_the_context(
    sdk: ollama.AsyncClient, runner: ModelRunner, smollm2: StoredModel
) -> None:
    options = {**GREEDY, "num_ctx": 1024}
    answer = await sdk.chat("smollm2", messages=QUESTION, options=options)
    assert "Paris" in (answer.message.content or "")
    [loaded] = (await sdk.ps()).models
    assert loaded.context_length == 1024
    [config] = await runner.configurations(smollm2.id)
    assert config.config.context_size == 1024


async def test_an_empty_request_loads_with_its_num_ctx(
    sdk: ollama.AsyncClient, runner: ModelRunner, smollm2: StoredModel
) -> None:
    loaded = await sdk.generate("smollm2", options={"num_ctx": 2048})
    assert loaded.done_reason == "load"
    [running] = (await sdk.ps()).models
    assert running.context_length == 2048
    chat_loaded = await sdk.chat("smollm2", messages=[], options={"num_ctx": 1024})
    assert chat_loaded.done_reason == "load"
    [running] = (await sdk.ps()).models
    assert running.context_length == 1024


async def test_embed_and_legacy_embeddings(sdk: ollama.AsyncClient, smollm2: StoredModel) -> None:
    embedded = await sdk.embed("smollm2", input=["The sky is blue.", "Grass is green."])
    first, second = embedded.embeddings
    assert len(first) == len(second) == 576
    assert math.isclose(math.fsum(x * x for x in first), 1.0, rel_tol=1e-3)
    assert first != second
    assert embedded.prompt_eval_count is not None
    assert embedded.prompt_eval_count > 4
    [one] = (await sdk.embed("smollm2", input="The sky is blue.")).embeddings
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(one, first, strict=True))
    [short] = (await sdk.embed("smollm2", input="The sky is blue.", dimensions=8)).embeddings
    assert len(short) == 8
    assert math.isclose(math.fsum(x * x for x in short), 1.0, rel_tol=1e-6)
    legacy = await sdk.embeddings("smollm2", prompt="The sky is blue.")
    assert len(legacy.embedding) == 576


async def test_copy_then_delete(
    sdk: ollama.AsyncClient, runner: ModelRunner, smollm2: StoredModel
) -> None:
    copied = await sdk.copy("smollm2", "backup:v1")
    assert copied.status == "success"
    names = sorted(model.model or "" for model in (await sdk.list()).models)
    assert names == ["backup:v1", "smollm2:135M-Q4_1"]
    assert (await runner.get_model("ai/backup:v1")).id == smollm2.id
    deleted = await sdk.delete("backup:v1")
    assert deleted.status == "success"
    assert [model.model for model in (await sdk.list()).models] == ["smollm2:135M-Q4_1"]
    with pytest.raises(ollama.ResponseError) as missing:
        await sdk.delete("backup:v1")
    assert missing.value.status_code == 404
    assert "not found" in missing.value.error
    await sdk.delete("smollm2")
    assert (await sdk.list()).models == []


async def test_unknown_models_are_404_in_ollamas_shape(
    sdk: ollama.AsyncClient, smollm2: StoredModel
) -> None:
    for call in (
        sdk.show("nothing-here"),
        sdk.chat("nothing-here", messages=QUESTION),
        sdk.generate("nothing-here", prompt="hi"),
        sdk.embed("nothing-here", input="hi"),
        sdk.copy("nothing-here", "other"),
    ):
        with pytest.raises(ollama.ResponseError) as raised:
            await call
        assert raised.value.status_code == 404
        assert "nothing-here" in raised.value.error


async def test_a_tool_call_history_reaches_the_model(
    sdk: ollama.AsyncClient, smollm2: StoredModel
) -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "Sunny, 24 degrees Celsius", "tool_name": "get_weather"},
    ]
    answer = await sdk.chat(
        "smollm2", messages=history, tools=[weather], think=False, options=GREEDY
    )
    assert answer.done is True
    assert answer.message.content
    assert answer.prompt_eval_count is not None
    assert answer.prompt_eval_count > 30  # the tool result went into the prompt
