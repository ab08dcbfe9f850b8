"""Fixtures for the HTTP API: a real ModelRunner on tmp dirs, tiny GGUFs in its store, clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.core.store.store import StoredModel
from modelrunner.server.app import build_app
from modelrunner.server.serve import ApiServer
from tests.gguf_factory import write_tiny_gguf

BASE_URL = "http://modelrunner.test"
TINY = "ai/tiny:latest"
"""The tag the `tiny_model` fixture stores its model under."""


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    """A ~0.5 MB llama GGUF llama-server can load."""
    return write_tiny_gguf(tmp_path / "tiny.gguf")


@pytest.fixture
async def runner(settings: Settings) -> AsyncIterator[ModelRunner]:
    """A started ModelRunner on tmp dirs; stopped (with its llama-servers) afterwards."""
    model_runner = ModelRunner(settings)
    await model_runner.start()
    try:
        yield model_runner
    finally:
        await model_runner.stop()


@pytest.fixture
async def tiny_model(runner: ModelRunner, tiny_gguf: Path) -> StoredModel:
    """The tiny GGUF, packaged into the runner's store as ai/tiny:latest."""
    return await runner.package_model(tiny_gguf, TINY)


@pytest.fixture
async def other_gguf_model(runner: ModelRunner, tmp_path: Path) -> StoredModel:
    """A second tiny model (other bytes, another ID), stored as ai/other-tiny:latest."""
    gguf = write_tiny_gguf(tmp_path / "other.gguf", name="other", seed=1)
    return await runner.package_model(gguf, "ai/other-tiny:latest")


@pytest.fixture
def app(runner: ModelRunner) -> Starlette:
    """The API app around the runner (the fixture owns the runner's lifetime)."""
    return build_app(runner, manage_runner=False)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process (buffers whole responses)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


@contextlib.asynccontextmanager
async def serving(app: Starlette, start_within: float = 10.0) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port in this event loop; yields its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_config=None, timeout_graceful_shutdown=2)
    server = ApiServer(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    deadline = time.monotonic() + start_within
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, start_within)
        listener.close()


@pytest.fixture
async def live_url(app: Starlette) -> AsyncIterator[str]:
    """The app behind a real uvicorn on loopback, for streaming and disconnect tests."""
    async with serving(app) as url:
        yield url
