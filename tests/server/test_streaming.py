"""The inference proxy on the real llama-server: streaming via uvicorn, disconnects, curl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import openai
import pytest

from modelrunner.core.inference.upstream import UpstreamResponse
from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.store import StoredModel
from tests.server.conftest import TINY

pytestmark = pytest.mark.llama

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def _needs_llama_server(llama_server: Path) -> None:
    """Skip (with the reason) where there is no real llama-server."""


async def test_chat_completion_through_the_asgi_app(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "temperature": 0}
    response = await client.post("/engines/llama.cpp/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["role"] == "assistant"


async def test_completions_route_proxies_too(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    body = {"model": TINY, "prompt": "abc", "max_tokens": 3, "temperature": 0}
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    assert "choices" in response.json()


async def test_upstream_errors_pass_through_unchanged(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    response = await client.post(
        "/v1/chat/completions", json={"model": TINY, "messages": "not a list"}
    )
    assert 400 <= response.status_code < 600
    assert "error" in response.json()


async def test_openai_sdk_streams_chunks(live_url: str, tiny_model: StoredModel) -> None:
    sdk = openai.AsyncOpenAI(base_url=f"{live_url}/engines/v1", api_key="unused")
    stream = await sdk.chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "hello"}], stream=True,
        max_tokens=16, temperature=0,
    )  # fmt: skip
    deltas = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    await sdk.close()
    assert len(deltas) > 1
    assert "".join(deltas)


async def test_sse_headers(live_url: str, tiny_model: StoredModel) -> None:
    body = {"model": TINY, "messages": MESSAGES, "stream": True, "max_tokens": 4}
    async with (
        httpx.AsyncClient(base_url=live_url) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        text = (await response.aread()).decode()
    assert text.rstrip().endswith("data: [DONE]")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_curl_streams(live_url: str, tiny_model: StoredModel) -> None:
    body = json.dumps({"model": TINY, "messages": MESSAGES, "stream": True, "max_tokens": 8})
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sSN", "--max-time", "60", f"{live_url}/engines/v1/chat/completions",
        "-H", "Content-Type: application/json", "-d", body,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await curl.communicate()
    assert curl.returncode == 0, stderr.decode()
    events = [line for line in stdout.decode().splitlines() if line.startswith("data: ")]
    assert len(events) > 2
    assert events[-1] == "data: [DONE]"


async def test_client_disconnect_closes_the_upstream(
    live_url: str, runner: ModelRunner, tiny_model: StoredModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = asyncio.Event()
    client_gone = asyncio.Event()
    finished: list[bool] = []
    forward = runner.forward

    async def watched_forward(
        reference: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        keep_alive: float | None = None,
    ) -> UpstreamResponse:
        upstream = await forward(reference, path, body, headers, keep_alive=keep_alive)
        original_close = upstream.aclose

        async def aclose() -> None:
            await original_close()
            closed.set()

        original_chunks = upstream.iter_chunks

        async def iter_chunks() -> AsyncIterator[bytes]:
            first = True
            async for chunk in original_chunks():
                yield chunk
                if first:  # hold the rest until the client has hung up, however fast the model
                    first = False
                    await client_gone.wait()
                    # Working disconnect handling cancels us here; only if it does not, the
                    # stream goes on to the end and the test fails.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(closed.wait()), timeout=5)
            finished.append(True)

        monkeypatch.setattr(upstream, "aclose", aclose)
        monkeypatch.setattr(upstream, "iter_chunks", iter_chunks)
        return upstream

    monkeypatch.setattr(runner, "forward", watched_forward)
    body = {"model": TINY, "messages": MESSAGES, "stream": True, "max_tokens": 4000}
    async with (
        httpx.AsyncClient(base_url=live_url) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        async for _chunk in response.aiter_bytes():
            break  # hang up after the first bytes
    client_gone.set()
    await asyncio.wait_for(closed.wait(), timeout=10)
    assert not finished, "the whole answer was streamed to a client that had gone"
    [runner_info] = runner.running()
    assert not runner_info.in_use, "the request's slot of the runner was not given back"
    # the runner still serves afterwards
    async with httpx.AsyncClient(base_url=live_url, timeout=60) as http:
        quick = {"model": TINY, "messages": MESSAGES, "max_tokens": 2}
        response = await http.post("/v1/chat/completions", json=quick)
    assert response.status_code == 200
