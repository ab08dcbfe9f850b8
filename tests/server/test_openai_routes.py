"""OpenAI-compatible routes: model lists, the bad-input matrix, the openai SDK's typed errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import httpx2
import openai
import pytest
from starlette.applications import Starlette

from modelrunner.core.store.store import StoredModel
from tests.server.conftest import BASE_URL, TINY

PREFIXES = ["/v1", "/engines/v1", "/engines/llama.cpp/v1"]
CHAT = "/engines/v1/chat/completions"


def _error(response: httpx.Response) -> dict[str, object]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    error: dict[str, object] = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    return error


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_lists_models_the_openai_way(
    client: httpx.AsyncClient, tiny_model: StoredModel, prefix: str
) -> None:
    response = await client.get(f"{prefix}/models")
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    [model] = listing["data"]
    assert model["id"] == "ai/tiny:latest"  # normalised, not docker.io/…: what clients type
    assert model["object"] == "model"
    assert model["owned_by"] == "docker"
    assert model["created"] == tiny_model.created
    assert model["dmr"] == {
        "context_window": 512,
        "architecture": "llama",
        "parameters": tiny_model.config["parameters"],
        "quantization": tiny_model.config["quantization"],
        "size": tiny_model.config["size"],
    }


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_gets_one_model(
    client: httpx.AsyncClient, tiny_model: StoredModel, prefix: str
) -> None:
    response = await client.get(f"{prefix}/models/ai/tiny")
    assert response.status_code == 200
    assert response.json()["id"] == "ai/tiny:latest"


async def test_one_model_has_no_partial_name_fallback(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    await client.post(f"/models/{TINY}/tag", params={"repo": "myorg/other"})
    response = await client.get("/engines/v1/models/other")
    assert response.status_code == 404
    assert _error(response)["code"] == "model_not_found"


async def test_unknown_backend_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/engines/vllm/v1/models")
    assert response.status_code == 404
    assert "backend not found" in str(_error(response)["message"])


CHAT_BODY = {"model": TINY, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("path", "content", "status", "words"),
    [
        (CHAT, b"{not json", 400, "not valid JSON"),
        (CHAT, b"[1, 2]", 400, "JSON object"),
        (CHAT, json.dumps({"messages": []}).encode(), 400, "model is required"),
        (CHAT, json.dumps({"model": ""}).encode(), 400, "model is required"),
        (CHAT, json.dumps({"model": 7}).encode(), 400, "model is required"),
        (CHAT, json.dumps({"model": "Bad/Name"}).encode(), 400, "lower-case"),
        (CHAT, json.dumps({"model": "ai/x@sha256:12"}).encode(), 400, "digest"),
        (CHAT, json.dumps({"model": "ai/ghost"}).encode(), 404, "not found"),
        ("/v1/embeddings", json.dumps({"model": "ghost"}).encode(), 404, "not found"),
        ("/engines/vllm/v1/chat/completions", json.dumps(CHAT_BODY).encode(), 404, "backend"),
        ("/engines/v1/images/generations", b"{}", 404, "no route"),
    ],
)
async def test_bad_inference_requests_get_the_right_4xx(
    client: httpx.AsyncClient, path: str, content: bytes, status: int, words: str
) -> None:
    response = await client.post(
        path, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert words in str(_error(response)["message"])


async def test_oversize_body_is_413(client: httpx.AsyncClient) -> None:
    body = json.dumps({"model": TINY, "prompt": "x" * (10 * 1024 * 1024)}).encode()
    response = await client.post("/v1/completions", content=body)
    assert response.status_code == 413
    assert "too large" in str(_error(response)["message"])


async def test_oversize_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(11):
            yield b"x" * (1024 * 1024)

    response = await client.post("/v1/completions", content=chunks())
    assert response.status_code == 413


async def test_wrong_method_is_405_in_the_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert _error(response)["message"] == "method GET is not allowed on /v1/chat/completions"


async def test_openai_sdk_raises_typed_errors_with_our_message(app: Starlette) -> None:
    transport = httpx2.ASGITransport(app=app)  # the openai SDK is built on httpx2
    async with httpx2.AsyncClient(transport=transport) as http:
        sdk = openai.AsyncOpenAI(base_url=f"{BASE_URL}/engines/v1", api_key="x", http_client=http)
        with pytest.raises(openai.NotFoundError, match="not found"):
            await sdk.chat.completions.create(
                model="ai/ghost", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.BadRequestError, match="lower-case"):
            await sdk.chat.completions.create(
                model="Ghost/X", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.NotFoundError):
            await sdk.models.retrieve("ai/ghost")


async def test_openai_sdk_lists_models(app: Starlette, tiny_model: StoredModel) -> None:
    transport = httpx2.ASGITransport(app=app)  # the openai SDK is built on httpx2
    async with httpx2.AsyncClient(transport=transport) as http:
        sdk = openai.AsyncOpenAI(base_url=f"{BASE_URL}/v1", api_key="x", http_client=http)
        models = [model.id async for model in sdk.models.list()]
    assert models == ["ai/tiny:latest"]


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_embeddings_need_no_configure(
    client: httpx.AsyncClient, app: Starlette, tiny_model: StoredModel, prefix: str
) -> None:
    response = await client.post(f"{prefix}/embeddings", json={"model": "tiny", "input": "abc"})
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    assert len(item["embedding"]) == 64
    [info] = app.state.runner.running()
    assert (info.reference, info.mode) == (TINY, "embedding")


async def test_inference_finds_a_model_by_its_bare_name(
    client: httpx.AsyncClient, tiny_model: StoredModel, other_gguf_model: StoredModel
) -> None:
    """A bare "other" reaches myorg/other:v2 while it is the only "other"; two are named."""
    await client.post(f"/models/{TINY}/tag", params={"repo": "myorg/other", "tag": "v2"})
    response = await client.post("/v1/embeddings", json={"model": "other", "input": "abc"})
    assert response.status_code == 200, response.text
    await client.post(f"/models/{other_gguf_model.id}/tag", params={"repo": "team/other"})
    response = await client.post("/v1/embeddings", json={"model": "other", "input": "abc"})
    assert response.status_code == 404
    message = str(_error(response)["message"])
    assert "docker.io/myorg/other:v2" in message
    assert "docker.io/team/other:latest" in message


async def test_the_openai_sdk_embeds(app: Starlette, tiny_model: StoredModel) -> None:
    transport = httpx2.ASGITransport(app=app)  # the openai SDK is built on httpx2
    async with httpx2.AsyncClient(transport=transport) as http:
        sdk = openai.AsyncOpenAI(base_url=f"{BASE_URL}/v1", api_key="x", http_client=http)
        answer = await sdk.embeddings.create(model=TINY, input=["abc", "xyz"])
    assert [len(item.embedding) for item in answer.data] == [64, 64]


@pytest.mark.parametrize("path", ["/rerank", "/engines/rerank", "/engines/llama.cpp/rerank"])
async def test_rerank_runs_a_reranking_runner(
    client: httpx.AsyncClient, app: Starlette, tiny_model: StoredModel, path: str
) -> None:
    body = {"model": TINY, "query": "abc", "documents": ["abc", "xyz"]}
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert sorted(result["index"] for result in response.json()["results"]) == [0, 1]
    [info] = app.state.runner.running()
    assert info.mode == "reranking"


@pytest.mark.parametrize(
    ("path", "model", "status", "words"),
    [
        ("/rerank", "ai/ghost", 404, "not found"),
        ("/score", "", 400, "model is required"),
        ("/engines/vllm/rerank", TINY, 404, "backend not found"),
        ("/engines/v1/rerank", TINY, 404, "backend not found"),  # as DMR: "v1" is no backend
    ],
)
async def test_bad_rerank_requests_get_the_right_4xx(
    client: httpx.AsyncClient, path: str, model: str, status: int, words: str
) -> None:
    response = await client.post(path, json={"model": model, "query": "q", "documents": ["d"]})
    assert response.status_code == status, response.text
    if "/v1/" in path:  # under an OpenAI prefix: the envelope
        assert words in str(_error(response)["message"])
    else:
        assert response.headers["content-type"].startswith("text/plain")
        assert words in response.text
