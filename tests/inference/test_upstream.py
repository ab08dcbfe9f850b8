"""The upstream client: raw streamed requests and chat deltas over a runner's Unix socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelrunner.core.errors import InvalidInput, RunnerFailed
from modelrunner.core.inference.llama_server import LlamaServer
from modelrunner.core.inference.upstream import UpstreamClient, sse_data, upstream_error
from tests.inference.engine_fakes import FakeBundle


@pytest.fixture
async def runner(fake_llama_server: Path, bundle: FakeBundle) -> AsyncIterator[LlamaServer]:
    server = LlamaServer(
        fake_llama_server,
        bundle,
        model_id="sha256:abc",
        reference="ai/fake",
        llama_args=("--fake-reply", "one two three"),
    )
    await server.start(ready_timeout=30)
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient()
    yield upstream
    await upstream.close()


async def test_a_streamed_request_arrives_chunk_by_chunk(
    client: UpstreamClient, runner: LlamaServer
) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    response = await client.request(
        runner,
        "POST",
        "/v1/chat/completions",
        body,
        {"Content-Type": "application/json", "Host": "x"},
    )
    try:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        chunks = [chunk async for chunk in response.iter_chunks()]
    finally:
        await response.aclose()
    assert b"".join(chunks).endswith(b"data: [DONE]\n\n")


async def test_chat_deltas_yield_the_content(client: UpstreamClient, runner: LlamaServer) -> None:
    payload = {"messages": [{"role": "user", "content": "hi"}]}
    assert [delta async for delta in client.chat_deltas(runner, payload)] == [
        "one",
        " two",
        " three",
    ]


async def test_a_rejected_request_is_invalid_input_with_the_upstream_message(
    client: UpstreamClient, runner: LlamaServer
) -> None:
    with pytest.raises(InvalidInput, match="'messages' must be a non-empty list"):
        [delta async for delta in client.chat_deltas(runner, {"messages": []})]


async def test_an_error_event_mid_stream_is_a_runner_failure(
    client: UpstreamClient, runner: LlamaServer
) -> None:
    payload = {"messages": [{"role": "user", "content": "fail mid-stream"}]}
    seen: list[str] = []

    async def consume() -> None:
        async for delta in client.chat_deltas(runner, payload):
            seen.append(delta)

    with pytest.raises(RunnerFailed, match="fake failure"):
        await consume()
    assert seen == ["partial"]


async def test_a_runner_that_is_gone_is_a_runner_failure(
    client: UpstreamClient, runner: LlamaServer
) -> None:
    await runner.stop()
    with pytest.raises(RunnerFailed, match="not answering"):
        await client.request(runner, "GET", "/health")


async def test_server_sent_events_are_reassembled_across_chunks() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for piece in (
            b'data: {"a"',
            b": 1}\r\n\r\nda",
            b"ta: line1\ndata: line2\n\n",
            b"data: [DONE]",
        ):
            yield piece

    assert [event async for event in sse_data(chunks())] == ['{"a": 1}', "line1\nline2", "[DONE]"]


def test_upstream_errors_keep_the_message() -> None:
    rejected = upstream_error(400, b'{"error": {"message": "bad temp", "code": 400}}', "ai/x")
    assert isinstance(rejected, InvalidInput)
    assert rejected.message == "bad temp"
    failed = upstream_error(500, b"plain text", "ai/x")
    assert isinstance(failed, RunnerFailed)
    assert "plain text" in failed.message
