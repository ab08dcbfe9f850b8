"""OpenAI's Responses API through the real `openai` SDK, against uvicorn and llama-server with
SmolLM2; the translation's tool calls and the store on synthetic data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelrunner.core.inference.upstream import UpstreamResponse
from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.store import StoredModel
from modelrunner.server.responses_answers import ResponseEvents, ResponseShape, completed_response
from modelrunner.server.responses_requests import NOT_SUPPORTED, parse_request
from modelrunner.server.responses_store import ResponseStore, StoredResponse

SMOLLM2 = "ai/smollm2:135M-Q4_1"
QUESTION = "What is the capital of France? Answer in one word."
GREEDY: dict[str, Any] = {"temperature": 0, "max_output_tokens": 48}
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
async def smollm2(runner: ModelRunner, default_model_gguf: Path, llama_server: Path) -> StoredModel:
    """The default model (SmolLM2 135M), stored as ai/smollm2:135M-Q4_1."""
    return await runner.package_model(default_model_gguf, SMOLLM2)


@pytest.fixture
async def sdk(live_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """The openai SDK's async client, pointed at our /v1."""
    async with openai.AsyncOpenAI(base_url=f"{live_url}/v1", api_key="unused") as client:
        yield client


@pytest.fixture
def sent(runner: ModelRunner, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The chat requests the server sends llama-server, recorded on their way."""
    bodies: list[dict[str, Any]] = []
    forward = runner.forward

    async def recording(
        reference: str, path: str, body: bytes, headers: Mapping[str, str], **kwargs: Any
    ) -> UpstreamResponse:
        bodies.append(json.loads(body))
        return await forward(reference, path, body, headers, **kwargs)

    monkeypatch.setattr(runner, "forward", recording)
    return bodies


@pytest.mark.llama
async def test_create_without_streaming(
    sdk: openai.AsyncOpenAI, smollm2: StoredModel, sent: list[dict[str, Any]]
) -> None:
    response = await sdk.responses.create(
        model="smollm2", input=QUESTION, instructions="Be brief.", **GREEDY
    )
    assert response.id.startswith("resp_")
    assert len(response.id) == len("resp_") + 24
    assert response.status == "completed"
    assert response.model == "smollm2"
    assert response.instructions == "Be brief."
    assert "Paris" in response.output_text
    [message] = response.output
    assert message.type == "message"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "output_text"
    assert response.usage is not None
    assert response.usage.input_tokens > 10
    assert 0 < response.usage.output_tokens <= 48
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    [chat] = sent
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
    ]
    assert chat["max_tokens"] == 48
    assert chat["temperature"] == 0
    assert chat["stream"] is False


@pytest.mark.llama
async def test_streaming_sends_the_documented_events(
    sdk: openai.AsyncOpenAI, smollm2: StoredModel
) -> None:
    stream = await sdk.responses.create(model="smollm2", input=QUESTION, stream=True, **GREEDY)
    events = [event async for event in stream]
    types = [event.type for event in events]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(deltas),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert len(deltas) > 1
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(deltas)
    assert "Paris" in text
    done = events[-4]
    assert done.type == "response.output_text.done"
    assert done.text == text
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == text
    assert completed.response.status == "completed"
    assert completed.response.usage is not None
    assert len(deltas) <= completed.response.usage.output_tokens <= len(deltas) + 1  # + end token
    # and it was stored as it was streamed
    retrieved = await sdk.responses.retrieve(completed.response.id)
    assert retrieved.output_text == text


@pytest.mark.llama
async def test_the_sdk_stream_helper_gets_the_final_response(
    sdk: openai.AsyncOpenAI, smollm2: StoredModel
) -> None:
    async with sdk.responses.stream(model="smollm2", input=QUESTION, **GREEDY) as stream:
        texts = [
            event.delta async for event in stream if event.type == "response.output_text.delta"
        ]
        final = await stream.get_final_response()
    assert final.output_text == "".join(texts)
    assert "Paris" in final.output_text


@pytest.mark.llama
async def test_the_token_limit_makes_a_response_incomplete(
    sdk: openai.AsyncOpenAI, smollm2: StoredModel
) -> None:
    response = await sdk.responses.create(
        model="smollm2", input="Tell me a long story.", temperature=0, max_output_tokens=16
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert response.usage.output_tokens == 16
    stream = await sdk.responses.create(
        model="smollm2", input="Tell me a long story.", temperature=0, max_output_tokens=16,
        stream=True,
    )  # fmt: skip
    last = [event async for event in stream][-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None


@pytest.mark.llama
async def test_previous_response_id_continues_the_whole_conversation(
    sdk: openai.AsyncOpenAI, smollm2: StoredModel, sent: list[dict[str, Any]]
) -> None:
    first = await sdk.responses.create(
        model="smollm2", input="My name is Ada.", instructions="Be brief.", **GREEDY
    )
    second = await sdk.responses.create(
        model="smollm2", input="What is my name?", previous_response_id=first.id, **GREEDY
    )
    third = await sdk.responses.create(
        model="smollm2", input="And yours?", previous_response_id=second.id, stream=True, **GREEDY
    )
    completed = [event async for event in third][-1]
    assert completed.type in ("response.completed", "response.incomplete")  # 48 tokens may cut it
    assert second.previous_response_id == first.id
    # Instructions are not carried over (OpenAI's rule); every earlier input and output is.
    assert sent[1]["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my name?"},
    ]
    assert sent[2]["messages"] == [
        *sent[1]["messages"],
        {"role": "assistant", "content": second.output_text},
        {"role": "user", "content": "And yours?"},
    ]
    # A deleted response in the middle does not break what was built on it.
    await sdk.responses.delete(second.id)
    fourth = await sdk.responses.create(
        model="smollm2", input="Bye.", previous_response_id=completed.response.id, **GREEDY
    )
    assert fourth.status in ("completed", "incomplete")
    assert sent[3]["messages"][:5] == sent[2]["messages"]


@pytest.mark.llama
async def test_retrieve_delete_and_input_items(
    sdk: openai.AsyncOpenAI, smollm2: StoredModel, live_url: str
) -> None:
    created = await sdk.responses.create(
        model="smollm2",
        input=[
            {"role": "developer", "content": "Answer in one word."},
            {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
        ],
        metadata={"purpose": "test"},
        **GREEDY,
    )
    retrieved = await sdk.responses.retrieve(created.id)
    assert retrieved.id == created.id
    assert retrieved.output_text == created.output_text
    assert retrieved.metadata == {"purpose": "test"}

    newest_first = await sdk.responses.input_items.list(created.id)
    texts = [
        part.text
        for item in newest_first.data
        if item.type == "message"
        for part in item.content
        if part.type == "input_text"
    ]
    assert texts == [QUESTION, "Answer in one word."]
    oldest_first = await sdk.responses.input_items.list(created.id, order="asc", limit=1)
    [item] = oldest_first.data
    assert item.type == "message"
    assert item.role == "developer"
    assert item.id.startswith("msg_")
    assert oldest_first.has_more is True
    every = [item.id async for item in sdk.responses.input_items.list(created.id, limit=1)]
    assert every == [item.id for item in newest_first.data]

    await sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.delete(created.id)
    async with httpx.AsyncClient(base_url=live_url) as http:
        missing = await http.get(f"/engines/responses/{created.id}/input_items")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.llama
async def test_store_false_keeps_nothing(sdk: openai.AsyncOpenAI, smollm2: StoredModel) -> None:
    response = await sdk.responses.create(model="smollm2", input=QUESTION, store=False, **GREEDY)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(response.id)


@pytest.mark.llama
@pytest.mark.parametrize(
    "prefix", ["/responses", "/engines/responses", "/engines/v1/responses",
               "/engines/llama.cpp/v1/responses"],
)  # fmt: skip
async def test_every_dmr_prefix_serves_it(live_url: str, smollm2: StoredModel, prefix: str) -> None:
    async with httpx.AsyncClient(base_url=live_url, timeout=60) as http:
        created = await http.post(prefix, json={"model": "smollm2", "input": QUESTION, **GREEDY})
        assert created.status_code == 200
        assert "Paris" in created.json()["output"][0]["content"][0]["text"]
        retrieved = await http.get(f"{prefix}/{created.json()['id']}")
    assert retrieved.json() == created.json()


@pytest.mark.llama
async def test_function_tools_reach_llama_server(
    sdk: openai.AsyncOpenAI, smollm2: StoredModel, sent: list[dict[str, Any]]
) -> None:
    conversation: Any = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 24 C"},
    ]  # fmt: skip
    response = await sdk.responses.create(
        model="smollm2",
        input=conversation,
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        **GREEDY,
    )  # fmt: skip
    assert response.status == "completed"
    assert response.tools[0].type == "function"
    [chat] = sent
    assert chat["tools"] == [
        {"type": "function", "function": {key: WEATHER_TOOL[key]
                                          for key in ("name", "description", "parameters")}}
    ]  # fmt: skip
    assert chat["tool_choice"] == "auto"
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"},
    ]  # fmt: skip


@pytest.mark.llama
async def test_an_upstream_error_on_a_stream_keeps_its_status(
    sdk: openai.AsyncOpenAI, smollm2: StoredModel
) -> None:
    bad_schema: Any = {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk.responses.create(
            model="smollm2", input=QUESTION, stream=True,
            text={"format": {"type": "json_schema", "name": "answer", "schema": bad_schema,
                             "strict": True}},
        )  # fmt: skip
    assert raised.value.status_code == 400
    assert "#/nowhere" in raised.value.message
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["code"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("background", True),
        ("include", ["reasoning.encrypted_content"]),
        ("conversation", "conv_123"),
        ("prompt", {"id": "pmpt_1"}),
        ("truncation", "auto"),
        ("service_tier", "flex"),
        ("safety_identifier", "user-1"),
        ("top_logprobs", 2),
        ("stream_options", {"include_obfuscation": False}),
    ],
)
async def test_unsupported_features_are_a_400(
    client: httpx.AsyncClient, field: str, value: object
) -> None:
    response = await client.post(
        "/responses", json={"model": "smollm2", "input": "Hi", field: value}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"{field} {NOT_SUPPORTED}")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": "Hi"}, "model is required"),
        ({"model": "m", "input": "Hi", "tools": [{"type": "web_search"}]},
         f'tool type "web_search" {NOT_SUPPORTED}'),
        ({"model": "m", "input": "Hi", "text": {"format": {"type": "xml"}}},
         "text.format type 'xml' is not supported"),
        ({"model": "m", "input": "Hi",
          "text": {"format": {"type": "json_schema", "name": "no spaces", "schema": {}}}},
         "text.format.name must be"),
        ({"model": "m", "input": "Hi", "text": {"format": {"type": "json_schema", "name": "a"}}},
         "text.format.schema is required"),
        ({"model": "m", "input": [{"type": "input_file", "file_id": "f"}]},
         f"input[0]: input item type 'input_file' {NOT_SUPPORTED}"),
        ({"model": "m", "input": "Hi", "previous_response_id": "resp_gone"},
         'previous_response_id "resp_gone" was not found'),
        ({"model": "m"}, "input is required"),
        ({"model": "m", "input": "Hi", "tool_choice": {"type": "function", "function": "f"}},
         'tool_choice of type "function" needs the function\'s "name"'),
    ],
)  # fmt: skip
async def test_bad_requests_are_a_400_that_says_why(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await client.post("/v1/responses", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)


async def test_an_image_to_a_model_without_a_projector_is_a_400(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    body = {"model": "tiny", "input": [{"role": "user", "content": [image]}]}
    response = await client.post("/v1/responses", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == "tiny does not support images: it has no multimodal projector"
    assert error["type"] == "invalid_request_error"


async def test_invalid_json_and_unknown_backends(client: httpx.AsyncClient) -> None:
    response = await client.post("/engines/responses", content=b"{nope")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]
    response = await client.post("/engines/vllm/v1/responses", json={"model": "m", "input": "x"})
    assert response.status_code == 404
    assert "backend not found" in response.json()["error"]["message"]


@pytest.mark.parametrize("prefix", ["/responses", "/engines/responses", "/v1/responses"])
async def test_a_wrong_method_is_an_openai_error_on_every_prefix(
    client: httpx.AsyncClient, prefix: str
) -> None:
    response = await client.get(prefix)
    assert response.status_code == 405
    error = response.json()["error"]
    assert error["message"] == f"method GET is not allowed on {prefix}"
    assert error["type"] == "invalid_request_error"


async def test_an_unknown_model_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/responses", json={"model": "ai/nothing", "input": "Hi"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


# -- the translation, on synthetic chat chunks -------------------------------------------------


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def _call_delta(index: int, arguments: str, name: str = "", call_id: str = "") -> dict[str, Any]:
    function = {"arguments": arguments, **({"name": name} if name else {})}
    return {"tool_calls": [{"index": index, **({"id": call_id} if call_id else {}),
                            "function": function}]}  # fmt: skip


def test_streamed_tool_calls_become_function_call_items() -> None:
    request = parse_request({"model": "m", "input": "Weather?", "tools": [WEATHER_TOOL]})
    events = ResponseEvents(ResponseShape(request))
    emitted = events.start()
    for chunk in [
        _chunk({"role": "assistant", "content": "Let me check."}),
        _chunk(_call_delta(0, '{"city": ', "get_weather", "call_a")),
        _chunk(_call_delta(0, '"Paris"}')),
        _chunk(_call_delta(1, '{"city": "Rome"}', "get_weather", "call_b")),
        _chunk({}, "tool_calls"),
        {
            "choices": [],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
        },
    ]:
        emitted += events.feed(chunk)
    emitted += events.finish()
    assert [event["type"] for event in emitted] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert [event["sequence_number"] for event in emitted] == list(range(len(emitted)))
    final = emitted[-1]["response"]
    message, paris, rome = final["output"]
    assert message["content"][0]["text"] == "Let me check."
    assert (paris["call_id"], paris["name"], paris["arguments"]) == (
        "call_a",
        "get_weather",
        '{"city": "Paris"}',
    )
    assert (rome["call_id"], rome["arguments"]) == ("call_b", '{"city": "Rome"}')
    assert [event["output_index"] for event in emitted if event["type"].endswith("item.done")] == [
        0, 1, 2
    ]  # fmt: skip
    arguments_done = emitted[11]
    assert arguments_done["arguments"] == '{"city": "Paris"}'
    assert arguments_done["item_id"] == paris["id"]
    assert final["usage"]["input_tokens"] == 30
    assert final["usage"]["output_tokens"] == 12
    assert final["usage"]["total_tokens"] == 42
    assert final["tools"] == [WEATHER_TOOL]


def test_a_whole_answer_with_tool_calls() -> None:
    request = parse_request({"model": "m", "input": "Weather?", "tools": [WEATHER_TOOL]})
    completion = {
        "choices": [{"finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "call_z", "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}],
        }}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                  "prompt_tokens_details": {"cached_tokens": 3}},
    }  # fmt: skip
    response = completed_response(ResponseShape(request), completion)
    [call] = response["output"]
    assert call["type"] == "function_call"
    assert call["id"].startswith("fc_")
    assert (call["call_id"], call["name"], call["arguments"]) == (
        "call_z",
        "get_weather",
        '{"city":"Oslo"}',
    )
    assert response["usage"]["input_tokens_details"] == {"cached_tokens": 3}


def test_a_mid_stream_error_fails_the_response() -> None:
    events = ResponseEvents(ResponseShape(parse_request({"model": "m", "input": "Hi"})))
    emitted = events.start()
    emitted += events.feed(_chunk({"content": "Hel"}))
    failed = events.fail("server_error", "llama-server crashed")
    emitted += failed
    assert [event["type"] for event in failed] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "error", "response.failed",
    ]  # fmt: skip
    assert [event["sequence_number"] for event in emitted] == list(range(len(emitted)))
    assert failed[2]["item"]["status"] == "incomplete"
    assert failed[2]["item"]["content"][0]["text"] == "Hel"
    assert failed[3]["message"] == "llama-server crashed"
    response = failed[4]["response"]
    assert response["status"] == "failed"
    assert response["error"] == {"code": "server_error", "message": "llama-server crashed"}
    assert response["output"][0]["content"][0]["text"] == "Hel"


def test_the_store_forgets_after_its_ttl_and_beyond_its_bound() -> None:
    now = [0.0]
    store = ResponseStore(ttl=60, max_entries=2, clock=lambda: now[0])

    def stored(response_id: str) -> StoredResponse:
        return StoredResponse({"id": response_id}, [], [])

    store.put(stored("resp_a"))
    now[0] = 30
    store.put(stored("resp_b"))
    assert store.get("resp_a") is not None
    now[0] = 61
    assert store.get("resp_a") is None
    assert store.get("resp_b") is not None
    store.put(stored("resp_c"))
    store.put(stored("resp_d"))
    assert len(store) == 2
    assert store.get("resp_b") is None
    assert store.delete("resp_c") is True
    assert store.delete("resp_c") is False
    assert len(store) == 1
