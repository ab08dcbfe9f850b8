"""The real llama-server: tiny and real models, chatted with through the upstream client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelrunner.core.errors import RunnerFailed
from modelrunner.core.event_bus import EventBus
from modelrunner.core.inference.llama_server import LlamaServer
from modelrunner.core.inference.pool import RunnerPool
from modelrunner.core.inference.upstream import UpstreamClient
from modelrunner.core.settings import Settings
from modelrunner.core.store.store import ModelStore
from tests.gguf_factory import write_tiny_gguf
from tests.inference.engine_fakes import FakeBundle

pytestmark = pytest.mark.llama

HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0}


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient()
    yield upstream
    await upstream.close()


async def start(binary: Path, gguf: Path, llama_args: tuple[str, ...] | None = None) -> LlamaServer:
    server = LlamaServer(
        binary,
        FakeBundle(gguf.parent, gguf, config={"context_size": 256}),
        model_id="sha256:test",
        reference="ai/test",
        llama_args=llama_args,
    )
    await server.start(ready_timeout=120)
    return server


async def test_a_tiny_model_answers_a_chat_completion(
    llama_server: Path, tiny_gguf: Path, client: UpstreamClient
) -> None:
    server = await start(llama_server, tiny_gguf)
    try:
        assert "--ctx-size" in server.argv
        response = await client.request(
            server, "POST", "/v1/chat/completions", json.dumps(HELLO).encode(),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            assert response.status == 200
            body = json.loads(await response.read())
        finally:
            await response.aclose()
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["completion_tokens"] >= 1
        deltas = [delta async for delta in client.chat_deltas(server, HELLO)]
        assert all(isinstance(delta, str) for delta in deltas)
        metrics = await client.request(server, "GET", "/metrics")
        try:
            assert metrics.status == 200
            assert b"llamacpp:" in await metrics.read()
        finally:
            await metrics.aclose()
    finally:
        await server.stop()
    assert not server.runtime_dir.exists()


async def test_a_model_llama_cpp_cannot_load_fails_with_its_reason(
    llama_server: Path, tmp_path: Path
) -> None:
    """The error says what llama.cpp said was wrong, not its banner and warnings."""
    bad = write_tiny_gguf(tmp_path / "bad.gguf", extra_kv={"llama.expert_count": 4})
    with pytest.raises(RunnerFailed) as failed:
        await start(llama_server, bad)
    message = failed.value.message
    assert message.startswith("llama-server for ai/test exited with status 1 before it was ready: ")
    assert "llama.expert_count has wrong type i32 but expected type u32" in message
    assert "warning" not in message
    assert "\n" not in message


async def test_llama_args_without_metrics_still_serve(
    llama_server: Path, tiny_gguf: Path, client: UpstreamClient
) -> None:
    server = await start(llama_server, tiny_gguf, ("-ngl", "0", "--threads", "1"))
    try:
        assert not server.has_metrics
        deltas = [delta async for delta in client.chat_deltas(server, HELLO)]
        assert all(isinstance(delta, str) for delta in deltas)
    finally:
        await server.stop()


async def test_smollm2_knows_the_capital_of_france(
    llama_server: Path, default_model_gguf: Path, client: UpstreamClient
) -> None:
    server = await start(llama_server, default_model_gguf)
    question = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "max_tokens": 24,
        "temperature": 0,
    }
    try:
        answer = "".join([delta async for delta in client.chat_deltas(server, question)])
    finally:
        await server.stop()
    assert "Paris" in answer


async def test_the_pool_runs_a_packaged_model_from_the_store(
    settings: Settings, tiny_gguf: Path
) -> None:
    store = ModelStore(settings.models_path)
    stored = store.package_gguf(tiny_gguf, "ai/tiny:latest", context_size=256)
    pool = RunnerPool(settings, store, EventBus())
    try:
        runner = await pool.acquire("ai/tiny")
        assert await pool.acquire(stored.id) is runner
        assert runner.model_id == stored.id
        assert runner.argv[runner.argv.index("--ctx-size") :][:2] == ["--ctx-size", "256"]
        deltas = [delta async for delta in pool.upstream.chat_deltas(runner, HELLO)]
        assert all(isinstance(delta, str) for delta in deltas)
        [info] = pool.running()
        assert info.state == "ready"
    finally:
        await pool.close()
    assert pool.running() == []
