"""Ollama routes refuse bad input in Ollama's shape ({"error": "…"}) with a 4xx, never a 500; and
the pure translations (tool calls, images, think, options) both ways."""

from __future__ import annotations

import httpx
import pytest

from modelrunner.core.store.store import StoredModel
from modelrunner.server.ollama_answers import Reply
from modelrunner.server.ollama_requests import openai_messages, options_fields, think_fields

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5Er"
    "kJggg=="
)
HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("POST", "/api/chat", b"{not json", 400, "not valid JSON"),
        ("POST", "/api/chat", b"[1]", 400, "JSON object"),
        ("POST", "/api/chat", b"", 400, "missing request body"),
        ("POST", "/api/chat", {"messages": HI}, 400, "model is required"),
        ("POST", "/api/chat", {"model": 3, "messages": HI}, 400, '"model" must be a string'),
        ("POST", "/api/chat", {"model": "tiny", "messages": "hi"}, 400, '"messages" must be'),
        ("POST", "/api/chat", {"model": "tiny", "messages": [{"content": "x"}]},
         400, '"role"'),
        ("POST", "/api/chat", {"model": "tiny", "messages": HI, "stream": "yes"}, 400, "stream"),
        ("POST", "/api/chat", {"model": "tiny", "messages": HI, "format": "xml"}, 400, "format"),
        ("POST", "/api/chat", {"model": "tiny", "messages": HI, "think": "hard"}, 400, "think"),
        ("POST", "/api/chat", {"model": "tiny", "messages": HI, "options": []}, 400, "options"),
        ("POST", "/api/chat", {"model": "tiny", "messages": HI, "options": {"temperature": "hot"}},
         400, "options.temperature"),
        ("POST", "/api/chat", {"model": "tiny", "messages": HI, "options": {"num_ctx": 0}},
         400, "options.num_ctx"),
        ("POST", "/api/chat", {"model": "tiny", "messages": HI, "keep_alive": "soon"},
         400, "keep_alive"),
        ("POST", "/api/chat", {"model": "tiny", "messages": HI, "tools": {"x": 1}}, 400, "tools"),
        ("POST", "/api/chat", {"model": "tiny", "messages": HI, "tools": [{"type": "function"}]},
         400, 'tools[0] needs a "function" with a "name"'),
        ("POST", "/api/chat", {"model": "tiny", "messages": HI,
                               "tools": [{"type": "function", "function": {"name": 3}}]},
         400, 'tools[0] needs a "function" with a "name"'),
        ("POST", "/api/chat", {"model": "tiny", "messages": [
            {"role": "user", "content": "what?", "images": ["not base64!"]}]}, 400, "base64"),
        ("POST", "/api/chat", {"model": "tiny", "messages": [
            {"role": "user", "content": "what?", "images": [PNG]}]}, 400, "not support images"),
        ("POST", "/api/chat", {"model": "nothing-here", "messages": HI}, 404, "nothing-here"),
        ("POST", "/api/generate", {"model": "tiny", "prompt": "x", "suffix": "y"}, 400, "suffix"),
        ("POST", "/api/generate", {"model": "tiny", "prompt": 7}, 400, '"prompt" must be'),
        ("POST", "/api/generate", {"model": "nothing-here", "prompt": "x"}, 404, "nothing-here"),
        ("POST", "/api/embed", {"model": "tiny", "input": [1, 2]}, 400, '"input"'),
        ("POST", "/api/embed", {"model": "tiny", "input": "x", "dimensions": -1},
         400, "dimensions"),
        ("POST", "/api/embeddings", {"model": "nothing-here", "prompt": "x"}, 404, "nothing-here"),
        ("POST", "/api/show", {"model": "nothing-here"}, 404, "nothing-here"),
        ("POST", "/api/show", {}, 400, "model is required"),
        ("POST", "/api/pull", {"model": "Bad Name"}, 400, "invalid model reference"),
        ("POST", "/api/pull", {"model": "tiny", "insecure": "no"}, 400, "insecure"),
        ("DELETE", "/api/delete", {"model": "nothing-here"}, 404, "nothing-here"),
        ("DELETE", "/api/delete", b"{", 400, "not valid JSON"),
        ("POST", "/api/copy", {"source": "tiny"}, 400, "destination"),
        ("POST", "/api/copy", {"source": "tiny", "destination": "Bad Name"}, 400, "invalid"),
        ("POST", "/api/copy", {"source": "nothing-here", "destination": "x"}, 404, "nothing-here"),
        ("GET", "/api/nope", None, 404, "no route"),
        ("GET", "/api/chat", None, 405, "not allowed"),
    ],
)  # fmt: skip
async def test_bad_requests_are_ollama_errors(
    client: httpx.AsyncClient,
    tiny_model: StoredModel,
    method: str,
    path: str,
    body: object,
    status: int,
    says: str,
) -> None:
    content = body if isinstance(body, bytes) else None
    payload = None if isinstance(body, bytes) else body
    response = await client.request(method, path, content=content, json=payload)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"}
    assert says in response.json()["error"]


@pytest.mark.parametrize("empty", ["", []])
async def test_embedding_nothing_is_no_embeddings(
    client: httpx.AsyncClient, tiny_model: StoredModel, empty: object
) -> None:
    response = await client.post("/api/embed", json={"model": "tiny", "input": empty})
    assert response.status_code == 200, response.text
    assert response.json() == {"model": "tiny", "embeddings": []}


async def test_tags_lists_every_tag_and_an_untagged_model_by_id(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    tagging = {"repo": "hf.co/org/tiny", "tag": "F32"}
    await client.post("/models/ai/tiny:latest/tag", params=tagging)
    models = (await client.get("/api/tags")).json()["models"]
    assert [m["name"] for m in models] == ["tiny:latest", "hf.co/org/tiny:F32"]
    assert {m["digest"] for m in models} == {tiny_model.id.removeprefix("sha256:")}
    for name in ("tiny", "tiny:latest", "hf.co/org/tiny:F32"):
        shown = await client.post("/api/show", json={"model": name})
        assert shown.json()["details"]["quantization_level"] == "F32", name


def test_tool_calls_round_trip() -> None:
    history = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "weather", "arguments": {"city": "Rome"}}}]},
        {"role": "tool", "content": "11 C", "tool_name": "weather"},
        {"role": "tool", "content": "19 C", "tool_name": "weather"},
    ]  # fmt: skip
    user, assistant, paris, rome = openai_messages(history)
    assert user == {"role": "user", "content": "Weather in Paris and Rome?"}
    first, second = assistant["tool_calls"]
    assert first == {"id": "call_0", "type": "function",
                     "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    assert (paris["tool_call_id"], rome["tool_call_id"]) == ("call_0", second["id"])

    reply = Reply()
    for chunk in (
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {
            "name": "weather", "arguments": '{"ci'}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {
            "arguments": 'ty": "Oslo"}'}}]}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 9},
         "timings": {"prompt_ms": 20.5, "predicted_ms": 80.0}},
    ):  # fmt: skip
        assert reply.feed(chunk) == ("", "")
    assert reply.tool_calls() == [
        {"id": "c1", "function": {"index": 0, "name": "weather", "arguments": {"city": "Oslo"}}}
    ]
    stats = reply.statistics(0.25)
    assert stats == {
        "done_reason": "stop",
        "total_duration": 250_000_000,
        "load_duration": 149_500_000,
        "prompt_eval_count": 30,
        "prompt_eval_duration": 20_500_000,
        "eval_count": 9,
        "eval_duration": 80_000_000,
    }


def test_images_think_and_options_translate() -> None:
    [message] = openai_messages([{"role": "user", "content": "what is it?", "images": [PNG]}])
    assert message["content"] == [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    assert think_fields(True) == {
        "chat_template_kwargs": {"enable_thinking": True},
        "reasoning_format": "deepseek",
    }
    assert think_fields(False) == {"chat_template_kwargs": {"enable_thinking": False}}
    assert think_fields("high")["chat_template_kwargs"]["reasoning_effort"] == "high"
    options = {"temperature": 0.2, "top_k": 5, "num_predict": 7, "stop": "END", "seed": 3,
               "repeat_penalty": 1.1, "num_ctx": 2048, "num_gpu": 99}  # fmt: skip
    sampling = {"temperature": 0.2, "top_k": 5, "seed": 3, "repeat_penalty": 1.1}
    assert options_fields(options) == ({**sampling, "max_tokens": 7, "stop": ["END"]}, 2048)
    assert options_fields({"num_predict": -1}) == ({}, None)
