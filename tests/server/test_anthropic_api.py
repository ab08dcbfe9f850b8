"""Anthropic's Messages API through the real `anthropic` SDK and httpx, against uvicorn and
llama-server with SmolLM2; its errors in Anthropic's shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from modelrunner.core.errors import RunnerFailed
from modelrunner.core.inference.upstream import UpstreamResponse
from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.store import StoredModel
from modelrunner.server.errors import anthropic_error
from modelrunner.server.request_bodies import MAX_BODY_BYTES

SMOLLM2 = "ai/smollm2:135M-Q4_1"
QUESTION: list[Any] = [
    {"role": "user", "content": "What is the capital of France? Answer in one word."}
]
GREEDY: Any = {"temperature": 0}
"""Sent as an extra field: anthropic 2.x's create() no longer takes `temperature`."""
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
async def smollm2(runner: ModelRunner, default_model_gguf: Path, llama_server: Path) -> StoredModel:
    """The default model (SmolLM2 135M), stored as ai/smollm2:135M-Q4_1."""
    return await runner.package_model(default_model_gguf, SMOLLM2)


@pytest.fixture
async def sdk(live_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The anthropic SDK's async client, pointed at our /anthropic prefix."""
    client = anthropic.AsyncAnthropic(
        base_url=f"{live_url}/anthropic", api_key="unused", max_retries=0
    )
    yield client
    await client.close()


@pytest.fixture
async def http(live_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A plain httpx client on the live server."""
    async with httpx.AsyncClient(base_url=live_url, timeout=60) as client:
        yield client


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of an SSE body."""
    events = []
    for frame in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


@pytest.mark.llama
async def test_a_message_through_the_sdk(
    sdk: anthropic.AsyncAnthropic, smollm2: StoredModel
) -> None:
    message = await sdk.messages.create(
        model="smollm2",
        max_tokens=24,
        extra_body=GREEDY,
        system="You are a geography teacher.",
        messages=QUESTION,
    )
    assert message.type == "message"
    assert message.role == "assistant"
    [block] = message.content
    assert block.type == "text"
    assert "Paris" in block.text
    assert message.stop_reason == "end_turn"
    prompt = message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
    assert prompt > 15  # the system prompt and the question
    assert 0 < message.usage.output_tokens <= 24


@pytest.mark.llama
async def test_a_message_streamed_through_the_sdk(
    sdk: anthropic.AsyncAnthropic, smollm2: StoredModel
) -> None:
    async with sdk.messages.stream(
        model="smollm2:135M-Q4_1", max_tokens=24, extra_body=GREEDY, messages=QUESTION
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) >= 2
    assert "Paris" in "".join(pieces)
    [block] = final.content
    assert block.type == "text"
    assert block.text == "".join(pieces)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens >= len(pieces)


@pytest.mark.llama
async def test_the_stream_is_anthropics_sse(http: httpx.AsyncClient, smollm2: StoredModel) -> None:
    body = {"model": SMOLLM2, "max_tokens": 3, "stream": True, "messages": QUESTION}
    async with http.stream("POST", "/anthropic/v1/messages", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events((await response.aread()).decode())
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    _, delta = events[-2]
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"]["output_tokens"] == 3


@pytest.mark.llama
async def test_max_tokens_and_stop_sequences(http: httpx.AsyncClient, smollm2: StoredModel) -> None:
    body = {"model": "smollm2", "max_tokens": 2, "temperature": 0, "messages": QUESTION}
    cut = (await http.post("/anthropic/v1/messages", json=body)).json()
    assert cut["stop_reason"] == "max_tokens"
    assert cut["usage"]["output_tokens"] == 2
    body |= {"max_tokens": 24, "stop_sequences": ["Paris"]}
    stopped = (await http.post("/anthropic/v1/messages", json=body)).json()
    assert stopped["stop_sequence"] == "Paris"
    assert "Paris" not in stopped["content"][0]["text"]
    assert "France" in stopped["content"][0]["text"]


@pytest.mark.llama
async def test_a_tool_result_reaches_the_model(
    sdk: anthropic.AsyncAnthropic, smollm2: StoredModel
) -> None:
    history: Any = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "Sunny, 24 degrees Celsius",
                }
            ],
        },
    ]
    message = await sdk.messages.create(
        model="smollm2",
        max_tokens=32,
        extra_body=GREEDY,
        tools=[WEATHER_TOOL],
        messages=history,
    )
    [block] = message.content
    assert block.type == "text"
    assert "24" in block.text  # only the tool result said so


@pytest.mark.llama
async def test_count_tokens(
    sdk: anthropic.AsyncAnthropic, http: httpx.AsyncClient, smollm2: StoredModel
) -> None:
    counted = await sdk.messages.count_tokens(model="smollm2", messages=QUESTION)
    longer = await sdk.messages.count_tokens(
        model="smollm2",
        messages=[
            *QUESTION,
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And the capital of Italy?"},
        ],
    )
    assert counted.input_tokens > 10
    assert longer.input_tokens > counted.input_tokens + 8  # two turns, each with its markers
    body = {"model": SMOLLM2, "messages": QUESTION}
    response = await http.post("/anthropic/v1/messages/count_tokens", json=body)
    assert response.status_code == 200
    assert response.json() == {"input_tokens": counted.input_tokens}


@pytest.mark.llama
@pytest.mark.parametrize("prefix", ["/v1", "/engines/v1", "/engines/llama.cpp/v1"])
async def test_the_openai_prefixes_serve_messages_too(
    http: httpx.AsyncClient, smollm2: StoredModel, prefix: str
) -> None:
    body = {"model": "smollm2", "max_tokens": 24, "temperature": 0, "messages": QUESTION}
    response = await http.post(f"{prefix}/messages", json=body)
    assert response.status_code == 200
    assert "Paris" in response.json()["content"][0]["text"]
    counted = await http.post(f"{prefix}/messages/count_tokens", json=body)
    assert counted.json()["input_tokens"] > 10


@pytest.mark.llama
async def test_llama_servers_own_refusal_is_anthropic_shaped(
    sdk: anthropic.AsyncAnthropic, smollm2: StoredModel
) -> None:
    too_long: Any = [{"role": "user", "content": "word " * 20_000}]
    with pytest.raises(anthropic.BadRequestError) as refused:
        await sdk.messages.create(model="smollm2", max_tokens=4, messages=too_long)
    assert refused.value.status_code == 400
    body: Any = refused.value.body
    assert body.keys() == {"type", "error"}
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "exceeds the available context size" in body["error"]["message"]


@pytest.mark.llama
async def test_a_stream_broken_off_ends_with_anthropics_error_event(
    sdk: anthropic.AsyncAnthropic, runner: ModelRunner, smollm2: StoredModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    forward = runner.forward

    async def breaking(*args: Any, **kwargs: Any) -> UpstreamResponse:
        upstream = await forward(*args, **kwargs)
        chunks = upstream.iter_chunks

        async def two_then_crash() -> AsyncIterator[bytes]:
            async for number, chunk in aenumerate(chunks()):
                yield chunk
                if number == 1:
                    raise RunnerFailed(f"llama-server for {SMOLLM2} broke off its response")

        monkeypatch.setattr(upstream, "iter_chunks", two_then_crash)
        return upstream

    monkeypatch.setattr(runner, "forward", breaking)

    async def read_the_stream() -> None:
        async with sdk.messages.stream(model="smollm2", max_tokens=64, messages=QUESTION) as stream:
            async for _ in stream:
                pass

    with pytest.raises(anthropic.APIStatusError, match="broke off its response") as broken:
        await read_the_stream()
    body: Any = broken.value.body
    assert body["error"]["type"] == "api_error"
    assert body["error"]["message"] == f"llama-server for {SMOLLM2} broke off its response"


async def aenumerate(items: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    number = 0
    async for item in items:
        yield number, item
        number += 1


@pytest.mark.parametrize(
    ("body", "status", "kind", "message"),
    [
        (b'{"model": "smollm2", ', 400, "invalid_request_error", "Invalid JSON in request body"),
        (b"[1, 2]", 400, "invalid_request_error", "Invalid JSON in request body"),
        (b'{"messages": []}', 400, "invalid_request_error", "Missing required field: model"),
        (b'{"model": "smollm2"}', 400, "invalid_request_error", "Missing required field: messages"),
        (
            b'{"model": "ai/nowhere", "messages": []}',
            404,
            "not_found_error",
            "Model not found: ai/nowhere",
        ),
    ],
)
@pytest.mark.parametrize("operation", ["messages", "messages/count_tokens"])
async def test_refusals_are_anthropic_shaped(
    http: httpx.AsyncClient, operation: str, body: bytes, status: int, kind: str, message: str
) -> None:
    response = await http.post(f"/anthropic/v1/{operation}", content=body)
    assert response.status_code == status
    assert response.json() == {"type": "error", "error": {"type": kind, "message": message}}


PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5Er"
    "kJggg=="
)


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "text", "text": "What is this?"},
         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}],
        [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}]}],
    ],
)  # fmt: skip
async def test_an_image_to_a_model_without_a_projector_is_a_400(
    client: httpx.AsyncClient, tiny_model: StoredModel, content: list[Any]
) -> None:
    body = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": content}]}
    response = await client.post("/anthropic/v1/messages", json=body)
    assert response.status_code == 400
    assert response.json() == {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "tiny does not support images: it has no multimodal projector",
    }}  # fmt: skip


async def test_a_body_over_10_mib_is_request_too_large(http: httpx.AsyncClient) -> None:
    response = await http.post("/anthropic/v1/messages", content=b" " * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "request_too_large"


async def test_the_sdk_raises_typed_errors(sdk: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError, match="Model not found: nowhere"):
        await sdk.messages.create(model="nowhere", max_tokens=4, messages=QUESTION)


async def test_the_openai_prefixes_keep_openai_errors(http: httpx.AsyncClient) -> None:
    body = {"model": "ai/nowhere", "messages": QUESTION}
    response = await http.post("/v1/messages", json=body)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert "type" not in response.json()


@pytest.mark.parametrize(
    ("status", "kind"),
    [(503, "overloaded_error"), (500, "api_error"), (409, "invalid_request_error")],
)
def test_server_side_statuses_get_anthropics_types(status: int, kind: str) -> None:
    response = anthropic_error(status, "busy")
    assert response.status_code == status
    assert json.loads(bytes(response.body)) == {
        "type": "error",
        "error": {"type": kind, "message": "busy"},
    }
