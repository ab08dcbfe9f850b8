"""POST /engines/_configure loads the model in the background, as DMR: the runner shows in
/engines/ps with no inference request, and a load that fails does not fail the answer."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelrunner.core.events import PreloadFailed
from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.server.app import build_app
from tests.event_log import recorded
from tests.inference.engine_fakes import wait_until, write_executable
from tests.server.conftest import BASE_URL, TINY

FAKE_SERVER = Path(__file__).resolve().parents[1] / "fakes" / "fake_llama_server.py"


async def ps(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/engines/ps")
    assert response.status_code == 200
    entries: list[dict[str, Any]] = response.json()
    return entries


@pytest.mark.llama
@pytest.mark.usefixtures("tiny_model")
async def test_configure_loads_the_model_without_a_request(
    client: httpx.AsyncClient, runner: ModelRunner
) -> None:
    response = await client.post(
        "/engines/_configure", json={"model": "ai/tiny", "context-size": 512}
    )
    assert response.status_code == 202
    await wait_until(lambda: len(runner.running()) == 1)
    [entry] = await ps(client)  # loading, or loaded already
    assert (entry["model_name"], entry["mode"]) == (TINY, "completion")
    await wait_until(lambda: runner.running()[0].state == "ready", within=60)
    [entry] = await ps(client)
    assert "loading" not in entry
    assert "in_use" not in entry  # loaded, and nobody asked it anything
    assert not entry["last_used"].startswith("0001")
    model = await runner.get_model("ai/tiny")
    server = runner.pool.get(model.id)
    assert server is not None
    assert server.argv[server.argv.index("--ctx-size") + 1] == "512"  # with its new config


MakeRunner = Callable[..., Awaitable[ModelRunner]]


@pytest.fixture
async def make_fake_runner(
    settings: Settings, tmp_path: Path, tiny_gguf: Path
) -> AsyncIterator[MakeRunner]:
    """Started runners on the fake llama-server, with the tiny model stored as ai/tiny."""
    fake = write_executable(
        tmp_path / "fakebin" / "llama-server",
        f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SERVER}" "$@"\n',
    )
    runners: list[ModelRunner] = []

    async def make(*llama_args: str) -> ModelRunner:
        changes = {"llama_server_path": fake, "llama_args": llama_args or None, "sandbox": False}
        model_runner = ModelRunner(settings.with_changes(**changes))
        runners.append(model_runner)
        await model_runner.start()
        await model_runner.package_model(tiny_gguf, TINY)
        return model_runner

    yield make
    for model_runner in runners:
        await model_runner.stop()


@contextlib.asynccontextmanager
async def api(runner: ModelRunner) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(runner, manage_runner=False))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


async def test_any_mode_configured_preloads_the_completion_runner(
    make_fake_runner: MakeRunner,
) -> None:
    """DMR preloads with a chat request, whatever mode the config is for."""
    runner = await make_fake_runner()
    async with api(runner) as client:
        body = {"model": "ai/tiny", "mode": "embedding", "context-size": 64}
        assert (await client.post("/engines/_configure", json=body)).status_code == 202
        await wait_until(lambda: [i.state for i in runner.running()] == ["ready"])
        [entry] = await ps(client)
    assert (entry["model_name"], entry["mode"]) == (TINY, "completion")


async def test_a_failed_preload_does_not_fail_configure(make_fake_runner: MakeRunner) -> None:
    runner = await make_fake_runner("--fake-crash")  # dies while loading
    async with recorded(runner.subscribe()) as seen, api(runner) as client:
        response = await client.post("/engines/_configure", json={"model": "ai/tiny"})
        assert response.status_code == 202
        await wait_until(lambda: any(isinstance(e, PreloadFailed) for e in seen))
        assert await ps(client) == []
    [failed] = [e for e in seen if isinstance(e, PreloadFailed)]
    assert failed.reference == TINY
    assert "fake crash" in failed.message
