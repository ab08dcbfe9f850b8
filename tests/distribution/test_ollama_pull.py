"""POST /api/pull from a real registry, with the ollama SDK: Ollama's statuses, stream or not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import ollama
import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.server.app import build_app
from tests.distribution.conftest import RunningRegistry
from tests.gguf_factory import write_tiny_gguf
from tests.inference.engine_fakes import make_settings


async def _runner(root: Path) -> ModelRunner:
    settings = make_settings(root)
    runner = ModelRunner(settings)
    await runner.start()
    return runner


@pytest.fixture
async def pushed(registry: RunningRegistry, tmp_path: Path) -> str:
    """A tiny model in the registry; yields its reference."""
    source = await _runner(tmp_path / "source")
    reference = f"{registry.host}/ollama/tiny:v1"
    try:
        await source.package_model(write_tiny_gguf(tmp_path / "tiny.gguf"), reference)
        await source.push(reference)
    finally:
        await source.stop()
    return reference


@pytest.fixture
async def destination(tmp_path: Path) -> AsyncIterator[ModelRunner]:
    runner = await _runner(tmp_path / "destination")
    yield runner
    await runner.stop()


def _sdk(runner: ModelRunner) -> ollama.AsyncClient:
    transport = httpx.ASGITransport(app=build_app(runner, manage_runner=False))
    return ollama.AsyncClient(host="http://modelrunner.test", transport=transport)


async def test_pull_streams_ollamas_statuses(pushed: str, destination: ModelRunner) -> None:
    sdk = _sdk(destination)
    statuses = [part async for part in await sdk.pull(pushed, stream=True)]
    assert statuses[0].status == "pulling manifest"
    layers = [s for s in statuses if (s.status or "").startswith("pulling ") and s.digest]
    assert layers
    for layer in layers:
        assert layer.digest is not None
        assert layer.status == f"pulling {layer.digest.removeprefix('sha256:')[:12]}"
        assert layer.total is not None
        assert layer.completed is not None
        assert 0 <= layer.completed <= layer.total
    assert any(
        s.completed == s.total and (s.total or 0) > 400_000 for s in layers
    )  # the GGUF, all of it
    assert [s.status for s in statuses[-3:]] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    [listed] = (await sdk.list()).models
    assert listed.model == pushed
    info = (await sdk.show(pushed)).modelinfo
    assert info is not None
    assert info["general.architecture"] == "llama"


async def test_pull_without_streaming_and_its_errors(
    pushed: str, registry: RunningRegistry, destination: ModelRunner
) -> None:
    sdk = _sdk(destination)
    assert (await sdk.pull(pushed, stream=False)).status == "success"
    assert (await sdk.pull(pushed, stream=False)).status == "success"  # already there
    with pytest.raises(ollama.ResponseError) as missing:
        await sdk.pull(f"{registry.host}/ollama/absent:v1")
    assert missing.value.status_code == 404
    transport = httpx.ASGITransport(app=build_app(destination, manage_runner=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://modelrunner.test") as http:
        response = await http.post("/api/pull", json={"model": f"{registry.host}/ollama/absent:v1"})
    assert response.status_code == 404
    assert "not found" in json.loads(response.text)["error"]
    assert response.headers["content-type"] == "application/json"
