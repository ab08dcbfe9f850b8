"""Ollama-style keep_alive on OpenAI requests: 0 unloads after the answer, -1 keeps the model."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.store import StoredModel
from tests.server.conftest import TINY

MESSAGES = [{"role": "user", "content": "hi"}]


async def _until(condition: object, within: float = 10) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


@pytest.mark.llama
async def test_keep_alive_zero_unloads_after_the_request(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    body = {"model": TINY, "messages": MESSAGES, "max_tokens": 2, "keep_alive": "0"}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    await _until(lambda: runner.running() == [])


@pytest.mark.llama
async def test_keep_alive_forever_is_reported_and_kept(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    body = {"model": TINY, "messages": MESSAGES, "max_tokens": 2, "keep_alive": -1}
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    [info] = runner.running()
    assert info.state == "idle"
    assert info.keep_alive is not None
    assert info.keep_alive < 0


@pytest.mark.parametrize("keep_alive", ["soon", "5 parsecs", [1], {"m": 5}])
async def test_a_bad_keep_alive_is_a_400(
    client: httpx.AsyncClient, tiny_model: StoredModel, keep_alive: object
) -> None:
    body = {"model": TINY, "messages": MESSAGES, "keep_alive": keep_alive}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "keep_alive" in response.json()["error"]["message"]
